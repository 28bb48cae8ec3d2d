"""The interface every backbone offers the split model: segments between split points.

    image ─► segment 0 ─► [split 1] ─► segment 1 ─► [split 2] ─► ... ─► segment n ─► logits

A backbone keeps its own layer names (so published weights load into it) and says which of
its modules run between two split points. The split model never looks inside a segment.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import nn


class SplitBackbone(nn.Module):
    """A classifier cut into ``num_splits + 1`` segments."""

    @property
    @abstractmethod
    def num_splits(self) -> int:
        """How many split points the backbone offers."""

    @abstractmethod
    def segment(self, index: int) -> list[nn.Module]:
        """The modules that run, in order, from split point ``index`` to ``index + 1``.

        Split point 0 is the input and split point ``num_splits + 1`` the logits.
        """

    def run(self, h: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Run segments ``start .. stop - 1``: from split point ``start`` to ``stop``."""
        for index in range(start, stop):
            for module in self.segment(index):
                h = module(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The whole network, image to logits."""
        return self.run(x, 0, self.num_splits + 1)
