"""Batch augmentation for camera images, done with one ``grid_sample`` per batch.

    uint8 (B,224,224,3) ─► normalize ─► random resized crop + flip (affine grid) ─► (B,3,S,S)

A random resized crop (Szegedy et al. 2015) is an affine map from the output square to a
rectangle of the source, so a whole batch of crops, each with its own scale, aspect and
position, and the flips, costs one ``affine_grid`` and one bilinear ``grid_sample``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from splitnet.preprocess import to_model_input


def random_resized_crop(images: torch.Tensor, size: int, gen: torch.Generator,
                        scale: tuple[float, float] = (0.25, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """uint8 (B, H, W, 3) ─► normalized float (B, 3, size, size), cropped and flipped."""
    x = to_model_input(images)
    batch = x.shape[0]
    area = torch.empty(batch).uniform_(scale[0], scale[1], generator=gen)
    log_ratio = torch.empty(batch).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                            generator=gen)
    aspect = torch.exp(log_ratio)
    width = torch.sqrt(area * aspect).clamp(max=1.0)
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (torch.rand(batch, generator=gen) * 2 - 1) * (1 - width)
    cy = (torch.rand(batch, generator=gen) * 2 - 1) * (1 - height)
    flip = torch.where(torch.rand(batch, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = width * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = height
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, [batch, 3, size, size], align_corners=False)
    out = F.grid_sample(x.contiguous(), grid, mode="bilinear", padding_mode="reflection",
                        align_corners=False)
    return out.contiguous(memory_format=torch.channels_last)


def resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, H, W, 3) ─► normalized float (B, 3, size, size), the whole frame (evaluation)."""
    x = to_model_input(images)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    return x.contiguous(memory_format=torch.channels_last)
