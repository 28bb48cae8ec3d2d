"""Shared fixtures: the real Fashion-MNIST test split, the shipped model, free ports."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

from splitnet.card import ModelCard
from splitnet.checkpoint import LoadedModel
from splitnet.data.fashion_mnist import Split, load_split
from splitnet.zoo import SMALL_MODEL, checkpoint_for, load_card, load_pretrained

torch.set_num_threads(1)
# The small shipped model (fast); SPLITNET_TEST_CHECKPOINT points the suite at another one.
CHECKPOINT = Path(os.environ.get("SPLITNET_TEST_CHECKPOINT", checkpoint_for(SMALL_MODEL)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def checkpoint() -> Path:
    return CHECKPOINT


@pytest.fixture(scope="session")
def test_split() -> Split:
    return load_split("test")


@pytest.fixture(scope="session")
def shipped() -> LoadedModel:
    return load_pretrained(CHECKPOINT)


@pytest.fixture(scope="session")
def card() -> ModelCard:
    return load_card(CHECKPOINT)


@pytest.fixture(scope="module")
def edge(checkpoint):
    """A real edge server on loopback serving the test checkpoint, for one test module."""
    from edge_server.server import EdgeServer, ServerOptions

    server = EdgeServer(ServerOptions(address="127.0.0.1:0", checkpoints=(checkpoint,),
                                      max_wait_ms=1)).start()
    yield server
    server.stop(1)
