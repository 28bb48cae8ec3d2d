"""The configuration the device picks for every input: where to cut, how wide, how many bits.

A :class:`Config` is a small frozen value. It is hashable, printable, parses back from its
own string form, and is carried in every request, reply and record::

    Config(split=3, width=4, bits=4, exit_threshold=0.9)  ->  "split3/w4/b4/exit0.9"
    Config(split=2, width=None, bits=8)                  ->  "split2/raw/b8"
    Config(split=3, width=8, bits=4, int8=True)          ->  "split3/w8/b4/int8"
    Config(split=1, rate=3)                              ->  "split1/rate3"
    LOCAL                                                ->  "local"
    OFFLOAD_INPUT                                        ->  "offload/png"
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace

VALID_BITS = (2, 4, 8)
INPUT_CODECS = ("png", "raw-zstd", "jpeg95", "jpeg90", "jpeg75", "jpeg50")


class ConfigError(ValueError):
    """A configuration that is malformed or that the model does not offer."""


class Placement(enum.Enum):
    """Where the network runs."""

    SPLIT = "split"  # head (+ bottleneck encoder) on the device, tail on the edge
    LOCAL = "local"  # the whole network on the device
    OFFLOAD_INPUT = "offload"  # the compressed input image goes to the edge


@dataclass(frozen=True)
class Config:
    """One choice of how to run one input.

    Attributes:
        placement: SPLIT, LOCAL or OFFLOAD_INPUT.
        split: split point index (1 = shallowest) for SPLIT; None otherwise.
        width: bottleneck channels kept, or None to send the raw activation (no bottleneck).
        bits: quantization bits of what is sent at the split (2, 4 or 8).
        rate: the operating point of the model's learned entropy bottleneck (0 = fewest
            bytes), which sends entropy-coded latents instead of a slimmable code; width is
            then None and bits stays 8 (unused).
        exit_threshold: stop at a device-side exit when its top softmax probability is at
            least this; None never exits early.
        input_codec: how OFFLOAD_INPUT sends the image (see ``INPUT_CODECS``).
        int8: run the device's part (head, exit, encoder; LOCAL: the whole network) as the
            int8 post-training-quantized copy; what is sent and the edge's part are unchanged.
    """

    placement: Placement = Placement.SPLIT
    split: int | None = None
    width: int | None = None
    bits: int = 8
    exit_threshold: float | None = None
    input_codec: str | None = None
    int8: bool = False
    rate: int | None = None

    def __post_init__(self) -> None:
        if self.exit_threshold is not None and not 0.0 < self.exit_threshold <= 1.0:
            raise ConfigError(f"exit_threshold must be in (0, 1], got {self.exit_threshold}")
        if self.placement is Placement.SPLIT:
            if self.split is None or self.split < 1:
                raise ConfigError(f"a split config needs a split point >= 1, got {self.split}")
            if self.bits not in VALID_BITS:
                raise ConfigError(f"bits must be one of {VALID_BITS}, got {self.bits}")
            if self.width is not None and self.width < 1:
                raise ConfigError(f"width must be >= 1 or None (raw), got {self.width}")
            if self.input_codec is not None:
                raise ConfigError("input_codec only applies to OFFLOAD_INPUT")
            if self.rate is not None and (self.rate < 0 or self.width is not None
                                          or self.bits != 8):
                raise ConfigError(f"an entropy-bottleneck config takes a rate >= 0 and no "
                                  f"width or bits, got rate {self.rate}, width {self.width}, "
                                  f"bits {self.bits}")
        else:
            if self.rate is not None:
                raise ConfigError(f"{self.placement.value} takes no rate")
            if self.split is not None or self.width is not None or self.bits != 8:
                raise ConfigError(f"{self.placement.value} takes no split, width or bits")
            if self.placement is Placement.OFFLOAD_INPUT:
                if self.input_codec not in INPUT_CODECS:
                    raise ConfigError(
                        f"unknown input codec {self.input_codec!r}; use one of {INPUT_CODECS}"
                    )
                if self.exit_threshold is not None:
                    raise ConfigError("OFFLOAD_INPUT runs no device-side exit")
                if self.int8:
                    raise ConfigError("OFFLOAD_INPUT runs nothing on the device to quantize")
            elif self.input_codec is not None:
                raise ConfigError("input_codec only applies to OFFLOAD_INPUT")

    @classmethod
    def local(cls, exit_threshold: float | None = None, int8: bool = False) -> Config:
        """The whole network on the device, optionally stopping at an exit."""
        return cls(placement=Placement.LOCAL, exit_threshold=exit_threshold, int8=int8)

    @classmethod
    def offload_input(cls, codec: str = "png") -> Config:
        """Send the compressed input image; the edge runs the whole network."""
        return cls(placement=Placement.OFFLOAD_INPUT, input_codec=codec)

    @property
    def raw(self) -> bool:
        """True for a split that sends the unmodified activation (no bottleneck)."""
        return self.placement is Placement.SPLIT and self.width is None and self.rate is None

    @property
    def entropy_coded(self) -> bool:
        """True for a split through the learned entropy bottleneck (``splitN/rateR``)."""
        return self.rate is not None

    def with_exit(self, exit_threshold: float | None) -> Config:
        """The same config with another exit threshold."""
        if self.placement is Placement.OFFLOAD_INPUT:
            return self
        return replace(self, exit_threshold=exit_threshold)

    def with_int8(self, int8: bool = True) -> Config:
        """The same config with the device's part in int8 (or fp32)."""
        return self if self.placement is Placement.OFFLOAD_INPUT else replace(self, int8=int8)

    def without_exit(self) -> Config:
        """The same config with no early exit (what the card's per-config rows describe)."""
        return self.with_exit(None)

    def for_edge(self) -> Config:
        """What the edge is asked to run: exits and int8 are the device's business."""
        return self.with_exit(None).with_int8(False)

    def __str__(self) -> str:
        if self.placement is Placement.OFFLOAD_INPUT:
            return f"offload/{self.input_codec}"
        if self.placement is Placement.LOCAL:
            text = "local"
        else:
            if self.rate is not None:
                text = f"split{self.split}/rate{self.rate}"
            else:
                width = "raw" if self.width is None else f"w{self.width}"
                text = f"split{self.split}/{width}/b{self.bits}"
        if self.int8:
            text += "/int8"
        if self.exit_threshold is not None:
            text += f"/exit{self.exit_threshold:g}"
        return text

    @classmethod
    def parse(cls, text: str) -> Config:
        """Parse the string form: ``"split3/w4/b4/exit0.9"``, ``"local"``, ``"offload/png"``."""
        text = text.strip()
        if text.startswith("offload"):
            codec = text.partition("/")[2] or "png"
            return cls.offload_input(codec)
        exit_threshold = None
        match = re.fullmatch(r"(.*?)(/int8)?(?:/exit([0-9.]+))?", text)
        if match is None:  # pragma: no cover - the pattern always matches
            raise ConfigError(f"cannot parse config {text!r}")
        body, int8, exit_text = match.group(1), match.group(2) is not None, match.group(3)
        if exit_text is not None:
            try:
                exit_threshold = float(exit_text)
            except ValueError as error:
                raise ConfigError(f"bad exit threshold in {text!r}") from error
        if body == "local":
            return cls.local(exit_threshold, int8)
        rate_match = re.fullmatch(r"split(\d+)/rate(\d+)", body)
        if rate_match is not None:
            return cls(split=int(rate_match.group(1)), rate=int(rate_match.group(2)),
                       exit_threshold=exit_threshold, int8=int8)
        split_match = re.fullmatch(r"split(\d+)/(raw|w(\d+))/b(\d+)", body)
        if split_match is None:
            raise ConfigError(
                f"cannot parse config {text!r}; expected e.g. 'split3/w4/b4', "
                "'split2/raw/b8', 'split1/rate2', 'local', 'offload/png', optionally "
                "followed by '/int8' and '/exit0.9'"
            )
        width = None if split_match.group(2) == "raw" else int(split_match.group(3))
        return cls(
            split=int(split_match.group(1)),
            width=width,
            bits=int(split_match.group(4)),
            exit_threshold=exit_threshold,
            int8=int8,
        )


LOCAL = Config.local()
OFFLOAD_INPUT = Config.offload_input("png")
