"""The model card: every number the planner needs about one checkpoint, typed and versioned.

    splitnet.profile ─► ModelCard ─► <checkpoint>.card.json ─► ModelCard.load ─► planner,
                                                                 device client, oracle

All of it is measured on data held apart from both training and the final evaluation (the
``profiled_on`` field says which); the benchmark (``splitnet.bench``) measures the same
quantities afresh on the evaluation split. :meth:`ModelCard.load` refuses a card of another
``card_version`` with :class:`CardError`, naming the command that rewrites it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from splitnet.config import Config, Placement

CARD_VERSION = 2


class CardError(ValueError):
    """A model card that is missing, malformed or of another version."""


@dataclass
class ConfigStats:
    """One SPLIT config measured on the card's images."""

    config: str
    split: int
    width: int | None
    bits: int
    raw: bool
    accuracy: float
    mean_bytes: float
    p95_bytes: float
    head_macs: int
    tail_macs: int
    head_params: int
    tail_params: int
    head_latency_ms: float | None = None
    # overall accuracy with this config's device exit at each threshold (exited rows take
    # the exit's answer): {"0.9": 0.93, ...}
    accuracy_with_exit: dict[str, float] = field(default_factory=dict)
    int8_accuracy: float | None = None  # the same config with the int8 device head
    int8_head_latency_ms: float | None = None
    rate: int | None = None  # the entropy bottleneck's operating point, if it is one


@dataclass
class FullStats:
    """The whole network (LOCAL, no exit)."""

    accuracy: float
    macs: int
    params: int
    latency_ms: float
    int8_accuracy: float | None = None
    int8_latency_ms: float | None = None


@dataclass
class ExitThreshold:
    threshold: float
    exit_fraction: float
    exit_accuracy: float | None
    overall_accuracy: float
    # paired with the whole network on the same images: the share the exit answers wrongly
    # where the whole network is right, and the reverse. overall − full = right − wrong; the
    # two together size the uncertainty of that difference (sampling_margin)
    exit_wrong_full_right: float | None = None
    exit_right_full_wrong: float | None = None

    def sampling_margin(self, images: int, z: float = 1.645) -> float | None:
        """How far the accuracy this exit loses against the whole network may lie above the
        measured loss (overall − full = right − wrong), one-sided at z standard errors
        (1.645: 95 %): z · sqrt((wrong + right) / n) for a paired difference over ``images``
        answers. With no disagreement seen the share is taken as 1 / n, so a small sample
        never makes the margin zero. None when the card lacks the paired shares."""
        wrong, right = self.exit_wrong_full_right, self.exit_right_full_wrong
        if wrong is None or right is None or images <= 0:
            return None
        disagreement = max(wrong + right, 1.0 / images)
        return z * (disagreement / images) ** 0.5


@dataclass
class ExitStats:
    exit_point: int
    accuracy: float
    macs: int
    thresholds: list[ExitThreshold]


@dataclass
class InputCodecStats:
    """OFFLOAD_INPUT with one input codec."""

    codec: str
    accuracy: float
    mean_bytes: float
    p95_bytes: float
    encode_ms: float | None = None  # median per image, one thread (the device pays it)
    decode_ms: float | None = None  # median per image (the edge pays it)


@dataclass
class ModelCard:
    card_version: int
    model_id: str
    arch: str
    checkpoint: str
    profiled_on: str  # which images, e.g. "Imagenette train, held-apart 10 % (seed 0)"
    images: int
    input_shape: list[int]
    split_points: dict[str, list[int]]
    widths: list[int]
    bits: list[int]
    exit_points: list[int]
    exit_thresholds: list[float]
    latency_measured_on: str
    train_minutes: float | None
    full: FullStats
    configs: list[ConfigStats]
    exits: list[ExitStats]
    input_codecs: list[InputCodecStats]
    dataset: dict[str, str] = field(default_factory=dict)  # name, licence, trained on
    int8_engine: str | None = None

    # ---------------------------------------------------------------- look-ups
    def config_row(self, config: Config | str) -> ConfigStats | None:
        """The row of a split config (exit and int8 ignored), or None."""
        key = str(config.without_exit().with_int8(False)) if isinstance(config, Config) \
            else config
        return next((row for row in self.configs if row.config == key), None)

    def device_ms(self, config: Config) -> float:
        """The profiled device time of ``config`` for an input that does not exit: its head
        (LOCAL: the whole network), in int8 when the config says so and it was measured."""
        row = self.config_row(config) if config.placement is Placement.SPLIT else None
        if row is not None:
            int8_ms = row.int8_head_latency_ms if config.int8 else None
            return int8_ms or row.head_latency_ms or self.full.latency_ms
        int8_ms = self.full.int8_latency_ms if config.int8 else None
        return int8_ms or self.full.latency_ms

    def exit_stats(self, point: int) -> ExitStats:
        return next(e for e in self.exits if e.exit_point == point)

    def input_codec(self, codec: str) -> InputCodecStats:
        row = next((r for r in self.input_codecs if r.codec == codec), None)
        if row is None:
            raise CardError(f"the card has no input codec {codec!r}; it has "
                            f"{[r.codec for r in self.input_codecs]}")
        return row

    @property
    def has_int8(self) -> bool:
        return self.int8_engine is not None

    # ---------------------------------------------------------------- (de)serialization
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    def save(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        version = data.get("card_version")
        if version != CARD_VERSION:
            raise CardError(f"model card version {version} is not {CARD_VERSION}; rewrite it "
                            "with 'python -m splitnet.profile --model NAME'")
        try:
            known = {f.name for f in fields(cls)}
            unknown = set(data) - known
            if unknown:
                raise CardError(f"model card has unknown fields {sorted(unknown)}")
            values = dict(data)
            values["full"] = FullStats(**data["full"])
            values["configs"] = [ConfigStats(**row) for row in data["configs"]]
            values["exits"] = [
                ExitStats(**{**e, "thresholds": [ExitThreshold(**t) for t in e["thresholds"]]})
                for e in data["exits"]]
            values["input_codecs"] = [InputCodecStats(**row) for row in data["input_codecs"]]
            return cls(**values)
        except (KeyError, TypeError) as error:
            raise CardError(f"malformed model card: {error}") from error

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelCard:
        path = Path(path)
        if not path.is_file():
            raise CardError(f"model card {path} not found; write it with "
                            "'python -m splitnet.profile'")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise CardError(f"model card {path} is not JSON: {error}") from error
        return cls.from_dict(data)
