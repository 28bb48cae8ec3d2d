"""Every shipped checkpoint and its model card agree, on a fixed subset of evaluation images."""

import math
import shutil

import numpy as np
import pytest
import torch

from splitnet.card import CARD_VERSION, CardError, ModelCard
from splitnet.checkpoint import load_checkpoint
from splitnet.config import LOCAL, Config, ConfigError
from splitnet.data import DatasetNotFoundError
from splitnet.data.eval_sets import eval_images
from splitnet.data.imagenette import find_imagenette, list_image_folder
from splitnet.images import decode_image
from splitnet.preprocess import images_to_input
from splitnet.profile import write_card
from splitnet.zoo import card_path_for, checkpoint_for, list_zoo, load_card

# the configs checked against the card, besides LOCAL
CHECKED = {
    "mnv2_fmnist": ("split3/w4/b4", "split2/w2/b2", "split1/raw/b8", "split3/w1/b8"),
    "resnet18_imagenette": ("split3/w8/b4", "split1/w8/b4"),
}
SUBSET = {"mnv2_fmnist": 1000, "resnet18_imagenette": 200}
MAX_MB = {"mnv2_fmnist": 5, "resnet18_imagenette": 25}


def subset(model: str):
    """A fixed subset of the model's evaluation images: uint8 images and labels."""
    if model == "resnet18_imagenette":
        try:
            root = find_imagenette()
        except DatasetNotFoundError as error:
            pytest.skip(f"Imagenette is not on this machine: {error}")
        items, _ = list_image_folder(root / "val")
        chosen = items[:: len(items) // SUBSET[model]][: SUBSET[model]]
        return (np.stack([decode_image(p) for p, _ in chosen]),
                np.array([c for _, c in chosen]))
    data = eval_images(model).head(SUBSET[model])
    return data.images, data.labels


def test_the_zoo_holds_both_workloads():
    assert {"mnv2_fmnist", "resnet18_imagenette"} <= set(list_zoo())


@pytest.mark.parametrize("model", ["mnv2_fmnist", "resnet18_imagenette"])
def test_checkpoint_is_small_and_named_by_its_content(model):
    path = checkpoint_for(model)
    assert path.stat().st_size <= MAX_MB[model] * 1_000_000
    loaded = load_checkpoint(path)
    card = load_card(path)
    assert card.model_id == loaded.model_id
    assert card.card_version == CARD_VERSION
    assert "held-apart" in card.profiled_on or "half A" in card.profiled_on
    assert card.dataset["licence"]


@pytest.mark.parametrize("model", ["mnv2_fmnist", "resnet18_imagenette"])
@torch.no_grad()
def test_shipped_model_meets_its_card_on_a_fixed_subset(model):
    images, labels = subset(model)
    loaded = load_checkpoint(checkpoint_for(model))
    card = load_card(checkpoint_for(model))
    x, y = images_to_input(images), torch.as_tensor(labels)
    checks = [(LOCAL, card.full.accuracy)]
    for text in CHECKED[model]:
        row = card.config_row(text)
        assert row is not None
        checks.append((Config.parse(text), row.accuracy))
    for config, expected in checks:
        # four binomial standard errors: wide enough never to flake, narrow enough to
        # catch a wrong model
        tolerance = 4 * math.sqrt(expected * (1 - expected) / len(y))
        accuracy = float((loaded.model(x, config).argmax(1) == y).float().mean())
        assert abs(accuracy - expected) <= tolerance, (str(config), accuracy, expected)


@pytest.mark.parametrize("model", ["mnv2_fmnist", "resnet18_imagenette"])
def test_card_describes_every_config_and_exit(model):
    loaded = load_checkpoint(checkpoint_for(model))
    card = load_card(checkpoint_for(model))
    assert {row.config for row in card.configs} == {str(c) for c in
                                                    loaded.model.split_configs()}
    for row in card.configs:
        assert row.mean_bytes > 0 and row.p95_bytes >= row.mean_bytes * 0.9
        assert row.head_macs > 0 and row.tail_macs > 0 and (row.head_latency_ms or 0) > 0
        assert (row.int8_accuracy is not None) == card.has_int8
    assert [e.exit_point for e in card.exits] == list(loaded.model.spec.exit_points)
    for exit_stats in card.exits:
        for row in exit_stats.thresholds:
            # the paired shares account for the exit's whole difference from the network
            assert row.exit_wrong_full_right is not None and row.exit_right_full_wrong is not None
            assert row.overall_accuracy - card.full.accuracy == pytest.approx(
                row.exit_right_full_wrong - row.exit_wrong_full_right, abs=1e-6)
    assert {"png", "jpeg90", "jpeg50"} <= {c.codec for c in card.input_codecs}


def test_refreshing_a_cards_exits_refuses_other_images(tmp_path):
    checkpoint = tmp_path / checkpoint_for("mnv2_fmnist").name
    shutil.copy(checkpoint_for("mnv2_fmnist"), checkpoint)
    shutil.copy(card_path_for(checkpoint_for("mnv2_fmnist")), card_path_for(checkpoint))
    with pytest.raises(CardError, match="5000 images"):
        write_card(checkpoint, limit=100, exits_only=True)


def test_a_card_of_another_version_is_refused(tmp_path):
    text = card_path_for(checkpoint_for("mnv2_fmnist")).read_text()
    old = tmp_path / "old.card.json"
    old.write_text(text.replace(f'"card_version": {CARD_VERSION}', '"card_version": 1'))
    with pytest.raises(CardError, match="version 1"):
        ModelCard.load(old)
    assert ModelCard.load(card_path_for(checkpoint_for("mnv2_fmnist"))).full.accuracy > 0.9


@torch.no_grad()
def test_int8_head_agrees_with_fp32_on_a_fixed_subset():
    images, _ = subset("resnet18_imagenette")
    model = load_checkpoint(checkpoint_for("resnet18_imagenette")).model
    assert model.has_int8
    x = images_to_input(images[:64])
    for text in ("local", "split1/w8/b4", "split3/w8/b4", "split2/raw/b8"):
        config = Config.parse(text)
        fp32 = model(x, config).argmax(1)
        int8 = model(x, config.with_int8()).argmax(1)
        assert float((fp32 == int8).float().mean()) >= 0.9, text


@torch.no_grad()
def test_a_split_the_edge_did_not_answer_finishes_on_the_device_in_its_heads_precision():
    images, _ = subset("resnet18_imagenette")
    model = load_checkpoint(checkpoint_for("resnet18_imagenette")).model
    x = images_to_input(images[:8])
    for int8 in (False, True):
        whole = model.forward_head(x, LOCAL.with_int8(int8)).logits  # the same modules
        for text in ("split1/w8/b4", "split3/raw/b8"):
            config = Config.parse(text).with_int8(int8)
            finished = model.finish_on_device(model.forward_head(x, config), config)
            torch.testing.assert_close(finished, whole, rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="SPLIT"):
        model.finish_on_device(model.forward_head(x, LOCAL), LOCAL)


def test_a_model_without_int8_head_refuses_int8_configs():
    model = load_checkpoint(checkpoint_for("mnv2_fmnist")).model
    with pytest.raises(ConfigError, match="no int8 head"):
        model.forward_head(torch.zeros(1, 1, 28, 28), Config.parse("split3/w4/b4/int8"))


def test_a_checkpoint_is_not_served_beside_another_models_card(tmp_path):
    import shutil

    from edge_server.server import EdgeServer, ServerOptions
    from splitnet.checkpoint import CheckpointError

    small = checkpoint_for("mnv2_fmnist")
    copy = tmp_path / "mine.pt"
    shutil.copy(small, copy)
    shutil.copy(card_path_for(checkpoint_for("resnet18_imagenette")), card_path_for(copy))
    with pytest.raises(CheckpointError, match="describes resnet18_imagenette"):
        EdgeServer(ServerOptions(address="127.0.0.1:0", checkpoints=(copy,)))
    shutil.copy(card_path_for(small), card_path_for(copy))  # the right card: served
    EdgeServer(ServerOptions(address="127.0.0.1:0", checkpoints=(copy,))).start().stop(0)
