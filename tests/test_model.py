"""Shapes, the head/tail contract and free switching, for every registered model."""

import pytest
import torch

from splitnet import codec
from splitnet.config import LOCAL, OFFLOAD_INPUT, Config
from splitnet.model import create_model, list_models
from splitnet.model.entropy_bottleneck import EntropyCode
from splitnet.quantize import QuantizedTensor


def rand_input(model, batch):
    return torch.rand(batch, *model.spec.input_shape)


@pytest.fixture(scope="module", params=list_models())
def model(request):
    torch.manual_seed(0)
    m = create_model(request.param)
    # Give the BNs non-trivial statistics so untrained outputs are not all alike.
    m.train()
    with torch.no_grad():
        for _ in range(2):
            m.backbone(rand_input(m, 16))
            for point in m.split_points:  # and the bottlenecks' switchable norms
                for width in m.spec.bottleneck_widths:
                    m.bottleneck(point)(m.features(rand_input(m, 4), point), width, 8)
    return m.eval()


EXPECTED_SPATIAL = {"resnet18_imagenette": [(56, 56), (28, 28), (14, 14)]}


def test_feature_shapes_halve_per_stage(model):
    shapes = [model.feature_shape(p) for p in model.split_points]
    expected = EXPECTED_SPATIAL.get(model.spec.name, [(14, 14), (7, 7), (4, 4)])
    assert [s[1:] for s in shapes] == expected
    assert len(model.split_points) >= 3
    assert len(model.spec.bottleneck_widths) >= 4
    assert len(model.spec.exit_points) >= 2
    assert min(model.spec.exit_points) < max(model.split_points)


@torch.no_grad()
def test_every_config_has_the_declared_shapes(model):
    x = rand_input(model, 3)
    for config in model.split_configs():
        head = model.forward_head(x, config)
        assert head.code is not None
        assert tuple(head.code.codes.shape) == (3, *model.code_shape(config))
        if config.entropy_coded:  # integer symbols within the tables' coded range
            assert head.code.codes.dtype == torch.int32
            low, high = (t[config.rate][:, None, None] for t in (head.code.tables.low,
                                                                  head.code.tables.high))
            assert bool(((head.code.codes >= low) & (head.code.codes <= high)).all())
        else:
            assert head.code.codes.dtype == torch.uint8
            assert int(head.code.codes.max()) < 2 ** config.bits
        assert model.forward_tail(head.code, config).shape == (3, 10)
        assert model(x, config).shape == (3, 10)
    assert model(x, LOCAL).shape == (3, 10)
    assert model(x, OFFLOAD_INPUT).shape == (3, 10)


@torch.no_grad()
def test_head_then_tail_over_the_wire_equals_one_process(model):
    x = rand_input(model, 4)
    for config in model.split_configs():
        expected = model(x, config)
        head = model.forward_head(x, config)
        assert head.code is not None
        payloads = codec.encode_batch(head.code)  # what crosses the network
        received: QuantizedTensor | EntropyCode
        if config.entropy_coded:
            received = EntropyCode.cat([
                codec.decode_entropy(p, model.coding_tables, config.rate,
                                     model.code_shape(config)) for p in payloads])
        else:
            received = codec.decode_batch(payloads, model.code_shape(config), config.bits)
        torch.testing.assert_close(model.forward_tail(received, config), expected,
                                   rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_exit_threshold_decides_per_input(model):
    x = rand_input(model, 8)
    config = Config(split=max(model.split_points), width=2, bits=4)
    never = model.forward_head(x, config.with_exit(None))
    always = model.forward_head(x, config.with_exit(1e-6))
    assert not never.finished.any()
    assert always.finished.all() and always.code is None  # nothing is sent
    exit_point = model.exit_point_for(config)
    expected = model.exit_head(exit_point)(model.features(x, exit_point))
    torch.testing.assert_close(always.logits, expected)
    # LOCAL with an exit gives the exit's answer where confident, the full model elsewhere
    local = model(x, Config.local(1e-6))
    torch.testing.assert_close(local, expected)


@torch.no_grad()
def test_switching_configs_allocates_and_reloads_nothing(model):
    before = {name: (id(p), p.data_ptr()) for name, p in model.state_dict().items()}
    modules_before = [id(m) for m in model.modules()]
    x = rand_input(model, 1)
    for config in model.split_configs() + [LOCAL, Config.local(0.5)]:
        model(x, config)
    after = {name: (id(p), p.data_ptr()) for name, p in model.state_dict().items()}
    assert [p for p, v in after.items() if before[p][1] != v[1]] == []
    assert [id(m) for m in model.modules()] == modules_before


def test_deeper_splits_cost_the_device_more():
    model = create_model("mnv2_fmnist").eval()
    head_params = [model.param_counts(Config(split=p, bits=8))[0] for p in model.split_points]
    assert head_params == sorted(head_params)
    full, _ = model.param_counts(LOCAL)
    head, tail = model.param_counts(Config(split=2, bits=8))
    assert head + tail == full
