"""A learned entropy bottleneck at a shallow split: a few hundred bytes, many rates, one set
of weights.

    device                                                            edge
    stem output 64x56x56 ─► encoder (2 convs, /2) ─► y  Cx28x28
        ─► q = round(y / step[r]) ─► rANS with the prior's tables ═►
    ═► q ─► ŷ = q * step[r] ─► decoder (3 convs, x2 upsampling) ─► 64x56x56
        ─► layer1 (a trained copy) ─► the frozen network from layer2 on

The density of ``y`` is a learned, per-channel, non-parametric CDF (the factorized prior of
Ballé et al., 2018). One density serves every rate: the probability of symbol ``q`` at rate
``r`` is the density's mass on ``[(q - ½)·step, (q + ½)·step)``. Training replaces rounding
by additive uniform noise of the same width for the rate term (−log2 likelihood), and gives
the decoder the rounded value with a straight-through gradient. At inference the mass per
symbol is turned once into integer frequency tables (``coding_tables``), which are what the
device's encoder and the edge's decoder share: they are stored in the checkpoint, never
recomputed on either side, so the two agree bit for bit whatever their floating point.

Rates differ only in the quantization step (``EntropyBottleneckSpec.steps``, coarsest
first): training draws a step per image from a range that covers them all, so one decoder
serves every rate, and switching rate is choosing an index: nothing is reloaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from splitnet.model.layers import ConvBNAct
from splitnet.model.resnet import BasicBlock

LIKELIHOOD_FLOOR = 1e-9
TABLE_PRECISION = 12  # every symbol's frequency is an integer out of 2**12
TAIL_MASS = 1e-6  # mass left outside the coded range of a channel (symbols there are clamped)


@dataclass(frozen=True)
class EntropyBottleneckSpec:
    """Shape of the entropy bottleneck: where it sits and how many rates it offers."""

    point: int  # the split point it sits at (its input is the activation there)
    latent_channels: int
    # the quantization step of each rate, coarsest (fewest bytes) first
    steps: tuple[float, ...] = (2.83, 2.0, 1.41, 1.0, 0.71, 0.5)
    # training draws each image's step log-uniformly from this range
    train_steps: tuple[float, float] = (0.4, 3.6)
    # how many leading modules of the segment after the split the decoder stands in for
    # (ResNet: layer1), so the tail resumes after them
    decoder_replaces: int = 1
    encoder_channels: int = 96
    decoder_channels: int = 160


class FactorizedDensity(nn.Module):
    """A learned CDF per channel: a small monotone network from R to logits (Ballé et al.)."""

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3),
                 init_scale: float = 10.0) -> None:
        super().__init__()
        sizes = (1, *filters, 1)
        scale = init_scale ** (1 / (len(sizes) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(sizes) - 1):
            init = math.log(math.expm1(1 / scale / sizes[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, sizes[i + 1], sizes[i]),
                                                         init)))
            self.biases.append(nn.Parameter(torch.rand(channels, sizes[i + 1], 1) - 0.5))
            if i < len(sizes) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, sizes[i + 1], 1)))

    def logits_cdf(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the CDF at ``x`` (C, N): monotone in ``x`` per channel."""
        logits = x.unsqueeze(1)
        for i, matrix in enumerate(self.matrices):
            logits = torch.matmul(F.softplus(matrix), logits) + self.biases[i]
            if i < len(self.factors):
                logits = logits + torch.tanh(self.factors[i]) * torch.tanh(logits)
        return logits.squeeze(1)

    def bin_mass(self, centre: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
        """Mass of ``[centre - width/2, centre + width/2)`` per element; centre (C, N), width
        (C, 1). Computed on the side of the median where the sigmoids are not saturated."""
        lower = self.logits_cdf(centre - width / 2)
        upper = self.logits_cdf(centre + width / 2)
        sign = -torch.sign(lower + upper).detach()
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))


class EntropyBottleneck(nn.Module):
    """Encoder, per-rate step sizes, factorized prior and decoder (see the module's sketch)."""

    def __init__(self, spec: EntropyBottleneckSpec, channels: int) -> None:
        super().__init__()
        self.spec = spec
        hidden, wide, latent = spec.encoder_channels, spec.decoder_channels, \
            spec.latent_channels
        self.encoder_body = nn.Sequential(
            ConvBNAct(channels, hidden, kernel=3, stride=2),
            ConvBNAct(hidden, hidden, kernel=3),
        )
        self.encoder_out = nn.Conv2d(hidden, latent, 1, bias=True)
        self.density = FactorizedDensity(latent)
        self.decoder_body = nn.Sequential(
            ConvBNAct(latent, wide, kernel=1),
            ConvBNAct(wide, wide, kernel=3),
            nn.Upsample(scale_factor=2),
            ConvBNAct(wide, channels, kernel=3),
            nn.Conv2d(channels, channels, 1, bias=True),
        )
        # trained from the backbone's own layer1; what it returns feeds layer2
        self.decoder_layer1 = nn.Sequential(BasicBlock(channels, channels),
                                            BasicBlock(channels, channels))

    @property
    def rates(self) -> int:
        return len(self.spec.steps)

    def check_rate(self, rate: int) -> None:
        if not 0 <= rate < self.rates:
            raise ValueError(f"rate {rate} not offered; use 0..{self.rates - 1}")

    # ------------------------------------------------------------- device
    def latent(self, features: torch.Tensor) -> torch.Tensor:
        """Device side: activation at the split ─► y (B, C, H/2, W/2) in float."""
        out: torch.Tensor = self.encoder_out(self.encoder_body(features))
        return out

    def symbols(self, y: torch.Tensor, rate: int, tables: CodingTables) -> torch.Tensor:
        """Device side: y ─► integer symbols (int32), clamped to what the tables can code."""
        step = tables.steps[rate].view(1, -1, 1, 1)
        q = torch.round(y / step)
        low = tables.low[rate].view(1, -1, 1, 1)
        high = tables.high[rate].view(1, -1, 1, 1)
        return torch.minimum(torch.maximum(q, low), high).to(torch.int32)

    # ------------------------------------------------------------- edge
    def decode(self, q: torch.Tensor, rate: int, tables: CodingTables) -> torch.Tensor:
        """Edge side: symbols ─► the layer1 activation the tail continues from."""
        return self.reconstruct(q.float() * tables.steps[rate].view(1, -1, 1, 1))

    def reconstruct(self, y_hat: torch.Tensor) -> torch.Tensor:
        """ŷ ─► decoder ─► layer1 copy: what ``layer2`` takes."""
        out: torch.Tensor = self.decoder_layer1(self.decoder_body(y_hat))
        return out

    # ------------------------------------------------------------- training
    def noisy(self, y: torch.Tensor, step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training: (ŷ rounded to ``step`` with a straight-through gradient, bits per sample
        from the prior on y plus uniform noise of one step); ``step`` is (B, 1, 1, 1)."""
        rounded = torch.round(y / step) * step
        y_hat = y + (rounded - y).detach()
        noisy = y + (torch.rand_like(y) - 0.5) * step
        return y_hat, self.bits(noisy, step)

    def bits(self, values: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """−log2 likelihood per sample of ``values`` (B, C, H, W) under bins of width
        ``step`` (B, 1, 1, 1) centred on them."""
        batch, channels = values.shape[:2]
        flat = values.transpose(0, 1).reshape(channels, -1)
        width = step.reshape(1, batch, 1).expand(channels, batch, flat.shape[1] // batch)
        mass = self.density.bin_mass(flat, width.reshape(channels, -1))
        bits = -torch.log2(mass.clamp_min(LIKELIHOOD_FLOOR))
        return bits.reshape(channels, batch, -1).sum(dim=(0, 2))

    # ------------------------------------------------------------- coding tables
    @torch.no_grad()
    def coding_tables(self) -> CodingTables:
        """Integer frequency tables per rate and channel from the learned density.

        Each channel's coded range holds all but ``TAIL_MASS`` of its mass; every symbol in
        it gets a frequency of at least 1 out of 2**TABLE_PRECISION. Computed once, when a
        checkpoint is written, and stored with it (``CodingTables.state``)."""
        rates, channels = self.rates, self.spec.latent_channels
        steps = torch.tensor(self.spec.steps, dtype=torch.float32)
        low = torch.zeros(rates, channels)
        high = torch.zeros(rates, channels)
        freqs: list[list[np.ndarray]] = []
        for r in range(rates):
            step = float(steps[r])
            lo, hi = self._coded_range(step)
            low[r], high[r] = lo.float(), hi.float()
            symbols = torch.arange(int(lo.min()), int(hi.max()) + 1, dtype=torch.float32)
            centres = (symbols * step).view(1, -1).expand(channels, -1)
            mass = self.density.bin_mass(centres, torch.full((channels, 1), step)).double()
            offset = int(lo.min())
            freqs.append([quantize_frequencies(
                mass[c, int(lo[c]) - offset:int(hi[c]) - offset + 1].numpy())
                for c in range(channels)])
        per_channel = steps.to(torch.float16).float().view(-1, 1).expand(rates, channels)
        return CodingTables.build(per_channel.contiguous(), low, high, freqs)

    def _coded_range(self, step: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Per channel, the symbols holding all but TAIL_MASS of its mass at this step."""
        channels = self.spec.latent_channels
        values = torch.linspace(-256 * step, 256 * step, 4097)
        cdf = torch.sigmoid(self.density.logits_cdf(values.view(1, -1).expand(channels, -1)))
        below = torch.where(cdf <= TAIL_MASS / 2, values, values[0]).max(dim=1).values
        above = torch.where(cdf >= 1 - TAIL_MASS / 2, values, values[-1]).min(dim=1).values
        lo = torch.floor(below / step + 0.5).clamp(-256, 256).long()
        hi = torch.ceil(above / step - 0.5).clamp(-256, 256).long()
        return lo, torch.maximum(hi, lo)


def quantize_frequencies(mass: np.ndarray, precision: int = TABLE_PRECISION) -> np.ndarray:
    """Integer frequencies summing to 2**precision, each ≥ 1, close to ``mass`` in relative
    terms (deterministic: the largest frequency absorbs the rounding)."""
    total = 1 << precision
    if len(mass) > total:
        raise ValueError(f"{len(mass)} symbols cannot each get a frequency out of {total}")
    mass = np.maximum(mass, 0.0)
    share = mass / mass.sum() if mass.sum() > 0 else np.full(len(mass), 1 / len(mass))
    freq = np.maximum(1, np.floor(share * (total - len(mass))).astype(np.int64) + 1)
    freq[int(np.argmax(freq))] += total - int(freq.sum())
    if freq.min() < 1:
        raise ValueError("frequency table degenerated; the density is too flat for it")
    return freq.astype(np.int32)


@dataclass
class CodingTables:
    """What encoder and decoder share, per rate and channel: step, coded range, frequencies.

    ``freq`` and ``cum`` are (R, C, S) with S the widest channel's symbol count (unused
    slots hold frequency 0); symbol ``q`` of channel ``c`` is slot ``q - low[r, c]``.
    """

    steps: torch.Tensor  # float32 (R, C), float16-representable
    low: torch.Tensor  # float32 (R, C), integral
    high: torch.Tensor  # float32 (R, C), integral
    freq: np.ndarray  # int32 (R, C, S)
    cum: np.ndarray  # int32 (R, C, S + 1)
    _cache: dict[tuple[str, int], Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(cls, steps: torch.Tensor, low: torch.Tensor, high: torch.Tensor,
              freqs: list[list[np.ndarray]]) -> CodingTables:
        width = max(len(f) for row in freqs for f in row)
        freq = np.zeros((len(freqs), len(freqs[0]), width), np.int32)
        for r, row in enumerate(freqs):
            for c, f in enumerate(row):
                freq[r, c, :len(f)] = f
        cum = np.zeros(freq.shape[:2] + (width + 1,), np.int32)
        cum[..., 1:] = np.cumsum(freq, axis=-1)
        return cls(steps, low, high, freq, cum)

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors to store in a checkpoint."""
        return {"steps": self.steps.clone(), "low": self.low.to(torch.int32),
                "high": self.high.to(torch.int32), "freq": torch.from_numpy(self.freq.copy())}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> CodingTables:
        freq = state["freq"].numpy().astype(np.int32)
        cum = np.zeros(freq.shape[:2] + (freq.shape[2] + 1,), np.int32)
        cum[..., 1:] = np.cumsum(freq, axis=-1)
        if not np.all(cum[..., -1] == 1 << TABLE_PRECISION):
            raise ValueError("coding tables do not sum to the table precision")
        return cls(state["steps"].float(), state["low"].float(), state["high"].float(), freq,
                   cum)

    @property
    def rates(self) -> int:
        return int(self.freq.shape[0])

    def active_channels(self, rate: int) -> np.ndarray:
        """Channels that carry information at ``rate`` (more than one symbol in range);
        the others always hold their one symbol and are not sent."""
        key = ("active", rate)
        if key not in self._cache:
            self._cache[key] = np.flatnonzero(
                (self.high[rate] > self.low[rate]).numpy()).astype(np.int64)
        out: np.ndarray = self._cache[key]
        return out

    def decoder_rows(self, rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(slot ─► symbol index (C + 1, 2**12), freq (C + 1, S), cum (C + 1, S + 1)) at
        ``rate``, the last row a no-op (one symbol of frequency 2**12) that pads the coder."""
        key = ("decoder", rate)
        if key not in self._cache:
            freq = np.concatenate([self.freq[rate], np.zeros((1, self.freq.shape[2]),
                                                             np.int32)]).astype(np.int64)
            freq[-1, 0] = 1 << TABLE_PRECISION
            cum = np.zeros((freq.shape[0], freq.shape[1] + 1), np.int64)
            cum[:, 1:] = np.cumsum(freq, axis=1)
            slots = np.arange(1 << TABLE_PRECISION)
            lookup = np.stack([np.searchsorted(row[1:], slots, side="right") for row in cum])
            self._cache[key] = (lookup.astype(np.int64), freq, cum)
        out: tuple[np.ndarray, np.ndarray, np.ndarray] = self._cache[key]
        return out


@dataclass
class EntropyCode:
    """What an entropy-bottleneck config sends, before and after the wire: integer symbols
    (B, C, H, W) at one rate, with the tables that code them."""

    symbols: torch.Tensor  # int32 (B, C, H, W)
    rate: int
    tables: CodingTables

    @property
    def codes(self) -> torch.Tensor:
        return self.symbols

    def __getitem__(self, index: int | slice) -> EntropyCode:
        if isinstance(index, int):
            index = slice(index, index + 1)
        return EntropyCode(self.symbols[index], self.rate, self.tables)

    @staticmethod
    def cat(parts: list[EntropyCode]) -> EntropyCode:
        """Stack per-sample codes of one rate into a batch."""
        if len({p.rate for p in parts}) != 1:
            raise ValueError("cannot batch entropy codes of different rates")
        return EntropyCode(torch.cat([p.symbols for p in parts]), parts[0].rate,
                           parts[0].tables)
