"""Checkpoints on disk and the model id, a content hash of the weights.

    SplitModel ──save_checkpoint──► file.pt {arch, state_dict, meta, int8_calibration?}
    file.pt ──load_checkpoint──► LoadedModel(model in eval mode, model_id, meta)

The model id hashes every tensor's name, dtype, shape and bytes in a fixed order, so it
names the weights themselves, not the file's container format. With ``half=True`` float
tensors are stored as float16 and the model's own weights are first rounded to float16,
so the id is the same before saving and after loading. The file is the torch archive in a
zstd frame (float16 weights shrink by about 9 %, and decompress in tens of ms); a plain
torch archive is read too. A checkpoint that carries the int8
head's calibration gets its int8 head rebuilt on load (``splitnet.model.int8``). A model with
an entropy bottleneck stores its coder's integer tables beside the weights: both ends of the
wire must share them exactly, so they are written once and never recomputed.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import zstandard

from splitnet.model import SplitModel, create_model
from splitnet.model.entropy_bottleneck import CodingTables


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, or of an unknown architecture."""


@dataclass
class LoadedModel:
    """A model ready for inference, with the id that names its weights."""

    model: SplitModel
    model_id: str
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)


def model_id_of(model: SplitModel) -> str:
    """Content hash of the model's weights, e.g. ``mnv2_fmnist-3f9c0a1b2c3d4e5f``."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"{model.spec.name}-{digest.hexdigest()[:16]}"


def save_checkpoint(model: SplitModel, path: str | os.PathLike[str],
                    meta: dict[str, Any] | None = None, half: bool = False,
                    int8_calibration: dict[str, torch.Tensor] | None = None,
                    coding_tables: CodingTables | None = None) -> str:
    """Write the weights (float16 when ``half``) and return the model id."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if half:
        with torch.no_grad():
            for tensor in model.state_dict().values():
                if tensor.is_floating_point():
                    tensor.copy_(tensor.half().float())
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    model_id = model_id_of(model)
    tmp = path.with_suffix(path.suffix + ".tmp")
    blob: dict[str, Any] = {"arch": model.spec.name, "model_id": model_id, "state_dict": state,
                            "meta": meta or {}}
    if int8_calibration is not None:
        blob["int8_calibration"] = int8_calibration
    if coding_tables is not None:
        blob["coding_tables"] = coding_tables.state()
    write_blob(blob, tmp)
    os.replace(tmp, path)
    return model_id


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def write_blob(blob: dict[str, Any], path: Path) -> None:
    """``blob`` as a torch archive in a zstd frame."""
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(buffer.getvalue()))


def read_blob(path: str | os.PathLike[str], weights_only: bool = True) -> dict[str, Any]:
    """A checkpoint's dictionary, from a zstd-framed or a plain torch archive."""
    data = Path(path).read_bytes()
    if data[:4] == ZSTD_MAGIC:
        data = zstandard.ZstdDecompressor().decompress(data)
    blob: dict[str, Any] = torch.load(io.BytesIO(data), map_location="cpu",
                                      weights_only=weights_only)
    return blob


def load_checkpoint(path: str | os.PathLike[str]) -> LoadedModel:
    """Load a checkpoint written by :func:`save_checkpoint`, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} not found; train one with 'python -m splitnet.train' "
            "or pass the path of an existing one"
        )
    try:
        blob = read_blob(path)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a bad file
        raise CheckpointError(f"cannot read checkpoint {path}: {error}") from error
    try:
        model = create_model(blob["arch"])
        reference = model.state_dict()
        model.load_state_dict({k: v.to(reference[k].dtype) if k in reference else v
                               for k, v in blob["state_dict"].items()})
    except (KeyError, RuntimeError) as error:
        raise CheckpointError(
            f"checkpoint {path} does not fit its architecture: {error}") from error
    model.eval()
    model_id = model_id_of(model)
    if blob.get("model_id") not in (None, model_id):
        raise CheckpointError(f"checkpoint {path} is corrupt: its weights do not hash to its id")
    if "coding_tables" in blob:
        model.attach_coding_tables(CodingTables.from_state(blob["coding_tables"]))
    if "int8_calibration" in blob:
        from splitnet.model.int8 import Int8Head

        head = Int8Head(model)
        head.load_calibration(blob["int8_calibration"])
        model.attach_int8(head.convert())
    return LoadedModel(model=model, model_id=model_id, path=path, meta=blob.get("meta", {}))
