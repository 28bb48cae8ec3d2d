"""Shared fixtures: the real Fashion-MNIST test split and the shipped model."""

from __future__ import annotations

import pytest
import torch

from splitnet.checkpoint import LoadedModel
from splitnet.data import Split, load_split
from splitnet.zoo import load_card, load_pretrained

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def test_split() -> Split:
    return load_split("test")


@pytest.fixture(scope="session")
def shipped() -> LoadedModel:
    return load_pretrained()


@pytest.fixture(scope="session")
def card() -> dict:
    return load_card()
