"""The shipped checkpoint and its model card agree, on a fixed 1,000-image test subset."""

import torch

from splitnet.config import LOCAL, Config
from splitnet.zoo import DEFAULT_CHECKPOINT

SUBSET = 1000
# 1,000 images give a binomial standard error of about 0.75 points at 94 %; 3 points is
# four standard errors, wide enough never to flake and narrow enough to catch a wrong model.
TOLERANCE = 0.03


def test_checkpoint_is_small_and_named_by_its_content(shipped, card):
    assert DEFAULT_CHECKPOINT.stat().st_size <= 5 * 1024 * 1024
    assert card["model_id"] == shipped.model_id
    assert card["test_images"] == 10000


@torch.no_grad()
def test_shipped_model_meets_its_card_on_a_fixed_subset(shipped, card, test_split):
    x, y = test_split.tensors(limit=SUBSET)
    model = shipped.model
    rows = {row["config"]: row for row in card["configs"]}
    checks = [(LOCAL, card["full"]["accuracy"])]
    for text in ("split3/w4/b4", "split2/w2/b2", "split1/raw/b8", "split3/w1/b8"):
        checks.append((Config.parse(text), rows[text]["accuracy"]))
    for config, expected in checks:
        accuracy = float((model(x, config).argmax(1) == y).float().mean())
        assert abs(accuracy - expected) <= TOLERANCE, (str(config), accuracy, expected)


def test_card_describes_every_config_and_exit(shipped, card):
    model = shipped.model
    assert {row["config"] for row in card["configs"]} == {str(c) for c in model.split_configs()}
    for row in card["configs"]:
        assert row["mean_bytes"] > 0 and row["p95_bytes"] >= row["mean_bytes"] * 0.9
        assert row["head_macs"] > 0 and row["tail_macs"] > 0 and row["head_latency_ms"] > 0
    assert [e["exit_point"] for e in card["exits"]] == list(model.spec.exit_points)
    codecs = {c["codec"] for c in card["input_codecs"]}
    assert {"png", "jpeg90", "jpeg50"} <= codecs
