"""A tiny training run on real data: the loss goes down, and an interrupted run resumes."""

from dataclasses import replace

import torch

from splitnet.training.fashion_mnist import Recipe, Trainer, augment

TINY = Recipe(arch="mnv2_tiny", backbone_epochs=3, exit_epochs=1, bottleneck_epochs=(1, 1, 1),
              train_limit=1024, batch_size=64, backbone_lr=0.2)


@torch.no_grad()
def _loss(trainer: Trainer) -> float:
    trainer.model.eval()
    logits = trainer.model.backbone(trainer.train_x[:512])
    return float(torch.nn.functional.cross_entropy(logits, trainer.train_y[:512]))


def test_backbone_loss_goes_down(tmp_path):
    trainer = Trainer(TINY, tmp_path, log=False)
    before = _loss(trainer)
    trainer.train_backbone(started=0.0)
    after = _loss(trainer)
    assert len(trainer.history) == 3
    assert after < before - 0.3 and after < 2.0, (before, after)  # chance is ln 10 = 2.30


def test_interrupted_training_resumes_where_it_stopped(tmp_path):
    recipe = replace(TINY, backbone_epochs=2)
    first = Trainer(replace(recipe, backbone_epochs=2), tmp_path, log=False)
    first.epoch = 0
    # run one epoch only, as if interrupted after it
    first.recipe = replace(recipe, backbone_epochs=1)
    first.train_backbone(started=0.0)
    first.recipe = recipe
    first.save_state(None, started=0.0)
    resumed = Trainer(recipe, tmp_path, log=False)
    assert resumed.load_state()
    assert resumed.phase == "backbone" and resumed.epoch == 1
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    resumed.train_backbone(started=0.0)
    assert resumed.epoch == 2 and len(resumed.history) == 2


def test_augmentation_keeps_shape_and_range():
    x = torch.rand(32, 1, 28, 28)
    out = augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert not torch.equal(out, x)


def test_camera_training_runs_every_stage_and_resumes(tmp_path):
    """The camera recipe end to end on a tiny ImageFolder: backbone, exits and bottlenecks,
    int8 calibration; the checkpoint loads with its int8 head; a rerun skips every stage."""
    import numpy as np
    from PIL import Image

    from splitnet.checkpoint import load_checkpoint
    from splitnet.config import Config
    from splitnet.training.camera import (
        BackboneRecipe,
        EntropyRecipe,
        HeadsRecipe,
        RefineRecipe,
        train_camera_model,
    )

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, wnid in enumerate(("n01440764", "n02102040")):
            (tmp_path / "data" / split / wnid).mkdir(parents=True)
            for i in range(12):
                pixels = rng.integers(0, 80, (224, 224, 3), dtype=np.uint8) + 120 * c
                Image.fromarray(pixels.astype(np.uint8)).save(
                    tmp_path / "data" / split / wnid / f"{i}.JPEG")
    backbone = BackboneRecipe(resolutions=(64, 64), batch_size=8, eval_size=64)
    heads = HeadsRecipe(epochs=1, size=64, batch_size=8, bn_recalibration_images=8)
    refine = RefineRecipe(epochs=(1, 1, 1), size=64, batch_size=8)
    entropy = EntropyRecipe(batch_size=8, kd_epochs=2, kd_stop_epoch=1, polish_epochs=1)
    lines: list[str] = []
    path = train_camera_model(tmp_path / "work", tmp_path / "zoo", str(tmp_path / "data"),
                              backbone=backbone, heads=heads, refine=refine, entropy=entropy,
                              write_card=False, log=lines.append)
    assert sum(line.startswith("refine split") for line in lines) == 3
    for stage in ("backbone.pt", "heads.pt", "refined.pt"):
        assert (tmp_path / "work" / stage).is_file()
    loaded = load_checkpoint(path)
    assert loaded.model.has_int8 and loaded.meta["minutes"].keys() >= {
        "backbone", "exits_and_bottlenecks", "bottleneck_refinement", "int8_calibration"}
    x = torch.rand(2, 3, 224, 224)
    assert loaded.model(x, Config.parse("split1/w2/b2/int8")).shape == (2, 10)
    assert loaded.model(x, Config.parse("split1/rate2/int8")).shape == (2, 10)
    assert sum(line.startswith("entropy bottleneck epoch") for line in lines) == 2
    lines.clear()
    (tmp_path / "work" / "refined.pt").unlink()  # the refine state says every split is done
    again = train_camera_model(tmp_path / "work", tmp_path / "zoo2", str(tmp_path / "data"),
                               backbone=backbone, heads=heads, refine=refine, entropy=entropy,
                               write_card=False, log=lines.append)
    trained = ("backbone epoch", "heads epoch", "refine split", "entropy bottleneck epoch")
    assert not any(line.startswith(trained) for line in lines)  # nothing was trained again
    assert load_checkpoint(again).model_id == loaded.model_id
