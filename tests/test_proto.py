"""The generated modules match the .proto, and messages convert both ways."""

import subprocess
import sys
from pathlib import Path

import pytest
from splitnet_proto.messages import (
    InferReply,
    InferRequest,
    LoadReport,
    ModelInfo,
    RemoteError,
    ServedModel,
    config_from_message,
    config_to_message,
)
from splitnet_proto.v1 import inference_pb2 as pb

from splitnet.config import LOCAL, Config, ConfigError
from splitnet.model import create_model

ROOT = Path(__file__).resolve().parent.parent


def test_committed_generated_modules_match_a_fresh_generation():
    result = subprocess.run([sys.executable, str(ROOT / "proto" / "generate.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_config_crosses_the_wire_unchanged():
    model = create_model("mnv2_tiny")
    for config in model.split_configs() + [Config.offload_input(c) for c in ("png", "jpeg90")]:
        assert config_from_message(config_to_message(config)) == config
    # the exit threshold stays on the device
    config = Config(split=2, width=4, bits=4, exit_threshold=0.9)
    assert config_from_message(config_to_message(config)) == config.without_exit()
    with pytest.raises(ConfigError):
        config_to_message(LOCAL)


def test_messages_round_trip():
    load = LoadReport(3, 1.5, 0.25, 32)
    request = InferRequest(7, Config(split=3, width=4, bits=4), b"\x01\x02")
    assert InferRequest.from_message(request.to_message()) == request
    reply = InferReply(7, request.config, (0.25, 0.75), 1, 0.5, 2.0, 4, load)
    back = InferReply.from_message(reply.to_message())
    assert back.label == 1 and back.batch_size == 4 and back.load == load
    assert back.wire_bytes == reply.to_message().ByteSize() > 0
    assert back.probabilities == pytest.approx((0.25, 0.75))
    refused = InferReply(8, None, error=RemoteError(3, "bad payload"))
    assert InferReply.from_message(refused.to_message()).error == RemoteError(3, "bad payload")
    info = ModelInfo((ServedModel("m-1", "mnv2_tiny", (request.config, LOCAL)),
                      ServedModel("m-2", "resnet18_imagenette", (LOCAL,))), load)
    assert ModelInfo.from_message(info.to_message()) == info
    older = pb.ModelInfo(model_id="m-1", arch="mnv2_tiny", configs=["local"])  # no `models`
    assert ModelInfo.from_message(older).models == (ServedModel("m-1", "mnv2_tiny", (LOCAL,)),)


def test_a_reply_is_checked_against_its_request_model_and_shape():
    from dataclasses import replace

    from splitnet_proto.messages import model_tag

    model_id, config = "resnet18_imagenette-21e261488f9f8f92", Config(split=3, width=4, bits=4)
    assert model_tag(model_id) == 0x21E26148
    assert model_tag("mnv2_tiny") != model_tag("mnv2_fmnist")  # no hash: a CRC of the id
    good = InferReply(7, config, (0.1, 0.9), 1, model_tag=model_tag(model_id))
    back = InferReply.from_message(good.to_message())
    assert back.problem(7, config, model_id, 2) is None
    bad = {
        "request": replace(back, request_id=8),
        "model": replace(back, model_tag=model_tag("mnv2_fmnist-0123456789abcdef")),
        "config": replace(back, config=Config(split=3, width=8, bits=4)),
        "shape": replace(back, probabilities=(0.1, 0.8, 0.1)),
        "values": replace(back, probabilities=(float("nan"), 1.0)),
        "distribution": replace(back, probabilities=(0.9, 0.9)),
        "label": replace(back, label=5),
    }
    for what, reply in bad.items():
        assert reply.problem(7, config, model_id, 2) is not None, what
