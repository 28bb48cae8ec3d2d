"""splitnet's device side: classify frames where the planner says, never lose one.

    from device_client import DeviceClient
    with DeviceClient.for_model("resnet18_imagenette", edge="10.0.0.5:50051") as client:
        print(client.infer("frame.jpg").class_name)

``python -m device_client --help`` runs it from the command line, or as a service.
"""

from device_client.client import DeviceClient
from device_client.options import DeviceOptions, LinkOptions, PolicyOptions
from device_client.results import InferenceResult

__all__ = ["DeviceClient", "DeviceOptions", "InferenceResult", "LinkOptions", "PolicyOptions"]
