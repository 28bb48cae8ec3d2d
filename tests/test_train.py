"""A tiny training run on real data: the loss goes down, and an interrupted run resumes."""

from dataclasses import replace

import torch

from splitnet.train import Recipe, Trainer, augment

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
