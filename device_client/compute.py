"""Where the device's own work runs: one seam for every model call and encoder.

    DeviceClient ──compute("head", model.forward_head, x, config, int8=...)──► run_here
                   compute("codec.encode", codec.encode, code)                (the default:
                   compute("encode_image", encode_image, pixels, codec)        call it)
                   compute("finish", model.finish_on_device, head, config, int8=...)

The default runs each piece of work as it is. The experiments substitute an emulated
device (``experiments.emulation.EmulatedDevice``) that makes each piece take as long as it
would on a Raspberry Pi, and a simulator can substitute its own: nothing is patched.
``name`` says what the work is, ``int8`` at which precision it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Compute(Protocol):
    def __call__(self, name: str, fn: Callable[..., T], *args: Any,
                 int8: bool = False) -> T: ...


def run_here(name: str, fn: Callable[..., T], *args: Any, int8: bool = False) -> T:
    """The device's work, run on this machine as it is."""
    return fn(*args)
