"""The devices the experiments emulate: MobileNetV2-224 time on each CPU, and its power.

Anchors and assumptions, stated once:
- rpi4 int8: PyTorch's tutorial "Real Time Inference on Raspberry Pi 4 (30 fps!)" runs
  the quantized MobileNetV2 (qnnpack) at about 30 fps: 33 ms per frame. Assumed to be the
  per-inference time of the device's CPU.
- rpi4 fp32: assumed 4x the int8 time (133 ms): on the Cortex-A72, qnnpack's int8 kernels
  do four 8-bit multiply-accumulates per 32-bit lane and move a quarter of the bytes. No
  published Pi 4 fp32 figure from the same tutorial was available to us; replace this
  with a measurement on a real Pi 4 when there is one.
- rpi3: assumed 3x slower than the Pi 4 (Cortex-A53 at 1.4 GHz vs A72 at 1.5 GHz).
- pizero2: assumed 6x slower than the Pi 4 (Cortex-A53 at 1 GHz, 512 MB).
"""

from __future__ import annotations

from dataclasses import dataclass

from device_client.energy import RPI4, PowerProfile


@dataclass(frozen=True)
class DeviceProfile:
    """A device to emulate: MobileNetV2-224 time on its CPU per precision, and its power."""

    name: str
    int8_mobilenet_v2_ms: float
    fp32_mobilenet_v2_ms: float
    power: PowerProfile
    description: str


PROFILES = {
    "rpi4": DeviceProfile(
        "rpi4", 33.3, 133.0, RPI4,
        "Raspberry Pi 4 Model B: quantized MobileNetV2-224 at ~30 fps (PyTorch's Raspberry "
        "Pi tutorial), fp32 assumed 4x slower; 2.7 W idle, 6.4 W loaded"),
    "rpi3": DeviceProfile(
        "rpi3", 100.0, 400.0, PowerProfile(name="rpi3", idle_w=1.9, busy_w=5.1),
        "Raspberry Pi 3 Model B+: assumed 3x slower than the Pi 4; 1.9 W idle, 5.1 W loaded"),
    "pizero2": DeviceProfile(
        "pizero2", 200.0, 800.0, PowerProfile(name="pizero2", idle_w=0.6, busy_w=3.0),
        "Raspberry Pi Zero 2 W: assumed 6x slower than the Pi 4; 0.6 W idle, 3.0 W loaded"),
}


