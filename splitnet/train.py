"""``python -m splitnet.train``: train a shipped model, resumably (``splitnet.training``)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, replace
from pathlib import Path

import torch

from splitnet.checkpoint import save_checkpoint
from splitnet.data import DatasetNotFoundError
from splitnet.training.fashion_mnist import Recipe, Trainer


def main(argv: list[str] | None = None) -> int:
    """Long because: one declarative list of the command's options, then the dispatch to the
    model's recipe."""
    parser = argparse.ArgumentParser(
        prog="python -m splitnet.train",
        description="Train a split model from scratch, then write its checkpoint and model "
                    "card. Re-running the same command resumes an interrupted run from its "
                    "last completed epoch (or stage).",
        epilog="Examples:\n"
               "  python -m splitnet.train                          # Fashion-MNIST, ~75 min\n"
               "  python -m splitnet.train --model resnet18_imagenette   # camera model, "
               "~110 min\n"
               "  python -m splitnet.train --model resnet18_imagenette --init resnet18.pth\n"
               "      # start from torchvision's ImageNet weights (download them yourself)\n"
               "  python -m splitnet.train --model resnet18_imagenette \\\n"
               "      --from splitnet/zoo/resnet18_imagenette.pt   # entropy bottleneck only",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("splitnet/zoo"),
                        help="folder for <arch>.pt and <arch>.card.json (default: splitnet/zoo)")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/train"),
                        help="folder for the resumable state (default: runs/train)")
    parser.add_argument("--data-dir", default=None,
                        help="folder holding the four Fashion-MNIST IDX files "
                             "(default: the dataset-fashion-mnist package's folder)")
    parser.add_argument("--model", "--arch", dest="arch", default=Recipe.arch,
                        choices=["mnv2_fmnist", "mnv2_tiny", "resnet18_imagenette"],
                        help="what to train (default: %(default)s)")
    parser.add_argument("--init", type=Path, default=None,
                        help="resnet18_imagenette only: a torchvision resnet18 state dict to "
                             "start the backbone from (e.g. ImageNet weights)")
    parser.add_argument("--from", dest="start", type=Path, default=None, metavar="CHECKPOINT",
                        help="resnet18_imagenette only: take the backbone, exits and slimmable "
                             "bottlenecks from this checkpoint and train only the entropy "
                             "bottleneck (about an hour), then int8 calibration and the card")
    parser.add_argument("--epochs", type=int, default=Recipe.backbone_epochs,
                        help="backbone epochs (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=Recipe.seed)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: all cores)")
    parser.add_argument("--no-resume", action="store_true",
                        help="ignore any saved state and start from scratch")
    parser.add_argument("--no-card", action="store_true",
                        help="skip writing the model card (write it later with "
                             "'python -m splitnet.profile')")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.arch == "resnet18_imagenette":
        from splitnet.training.camera import train_camera_model

        work_dir = args.work_dir / args.arch
        if args.no_resume and work_dir.exists():
            import shutil

            shutil.rmtree(work_dir)
        try:
            train_camera_model(work_dir, args.out, args.data_dir, args.init,
                               write_card=not args.no_card, start=args.start)
        except DatasetNotFoundError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0
    if args.init is not None or args.start is not None:
        parser.error("--init and --from apply to resnet18_imagenette only")
    recipe = replace(Recipe(), arch=args.arch, backbone_epochs=args.epochs, seed=args.seed)
    try:
        trainer = Trainer(recipe, args.work_dir / recipe.arch, args.data_dir)
    except DatasetNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.no_resume and trainer.state_path.exists():
        trainer.state_path.unlink()
    trainer.load_state()
    summary = trainer.run()
    checkpoint = args.out / f"{recipe.arch}.pt"
    model_id = save_checkpoint(trainer.model, checkpoint,
                               meta={"recipe": asdict(recipe),
                                     "train_minutes": summary["train_minutes"],
                                     "history": summary["history"]})
    print(f"wrote {checkpoint} (model id {model_id}) after {summary['train_minutes']:.1f} min "
          "of training", file=sys.stderr)
    if not args.no_card:
        from splitnet.profile import write_card

        card_path = write_card(checkpoint, data_dir=args.data_dir)
        print(f"wrote {card_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
