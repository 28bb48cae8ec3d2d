"""Uniform quantization of the tensor that crosses the network.

    x (B, C, H, W) float ──► codes uint8 in [0, 2^bits - 1], scale (B,), zero_point (B,)
    codes * scale + zero_point ──► x_hat

Two ranges: a learned bottleneck emits values in [0, 1], so its range is fixed; a raw
activation uses each sample's own min and max. ``scale`` and ``zero_point`` are rounded to
float16, the precision the wire header carries, so the value the tail sees is bit-for-bit
the same in one process and across the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class QuantizedTensor:
    """Integer codes plus the per-sample affine map back to floats."""

    codes: torch.Tensor  # uint8 (B, C, H, W)
    scale: torch.Tensor  # float32 (B,), float16-representable
    zero_point: torch.Tensor  # float32 (B,), float16-representable
    bits: int

    def dequantize(self) -> torch.Tensor:
        """Float tensor the tail consumes."""
        view = (-1,) + (1,) * (self.codes.dim() - 1)
        return self.codes.float() * self.scale.view(view) + self.zero_point.view(view)

    def __getitem__(self, index: int | slice | torch.Tensor) -> QuantizedTensor:
        codes = self.codes[index]
        if codes.dim() == self.codes.dim() - 1:  # integer index: keep the batch axis
            index = slice(index, index + 1) if isinstance(index, int) else index
            codes = self.codes[index]
        return QuantizedTensor(codes, self.scale[index], self.zero_point[index], self.bits)

    @staticmethod
    def cat(parts: list[QuantizedTensor]) -> QuantizedTensor:
        """Stack per-sample tensors of the same shape and bits into one batch."""
        if len({p.bits for p in parts}) != 1:
            raise ValueError("cannot batch quantized tensors of different bit depths")
        return QuantizedTensor(
            torch.cat([p.codes for p in parts]),
            torch.cat([p.scale for p in parts]),
            torch.cat([p.zero_point for p in parts]),
            parts[0].bits,
        )


def _to_f16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float16).to(torch.float32)


def quantize_unit_range(x: torch.Tensor, bits: int) -> QuantizedTensor:
    """Quantize values already in [0, 1] (a bottleneck code) with a fixed range."""
    levels = (1 << bits) - 1
    batch = x.shape[0]
    scale = _to_f16(torch.full((batch,), 1.0 / levels))
    zero_point = torch.zeros(batch)
    view = (-1,) + (1,) * (x.dim() - 1)
    codes = torch.round(x / scale.view(view)).clamp_(0, levels).to(torch.uint8)
    return QuantizedTensor(codes, scale, zero_point, bits)


def quantize_min_max(x: torch.Tensor, bits: int) -> QuantizedTensor:
    """Quantize each sample over its own [min, max] (a raw activation)."""
    levels = (1 << bits) - 1
    flat = x.flatten(1)
    low = _to_f16(flat.min(dim=1).values)
    high = flat.max(dim=1).values
    scale = _to_f16(((high - low) / levels).clamp_min(1e-6))
    view = (-1,) + (1,) * (x.dim() - 1)
    codes = torch.round((x - low.view(view)) / scale.view(view)).clamp_(0, levels)
    return QuantizedTensor(codes.to(torch.uint8), scale, low, bits)


def fake_quantize_unit_range(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantize-dequantize in [0, 1] with a straight-through gradient, for training."""
    levels = (1 << bits) - 1
    q = torch.round(x.clamp(0, 1) * levels) / levels
    return x + (q - x).detach()
