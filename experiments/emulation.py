"""Emulated devices: this host's CPU time on the device's work, scaled to the device's speed.

    device work (a model call, an image or feature encode; device_client.compute), c = the
    least CPU time the same work has taken on this host (experiments.calibration.LeastCpu),
    w = its wall time ─► sleep max(f·c − w, 0) ─► it took f·c: proportional to the work

Each piece of work is priced in the precision it runs in: an int8 device head at the int8
factor, everything else at the fp32 one. Work outside model calls and encoders (planning,
bookkeeping) is not scaled: on the host it is well under a millisecond.

Why not a CFS quota: with a 10 ms period and a 13 % quota, any job under 1.3 ms of CPU runs
at full speed and longer ones finish at the period's phase, so emulated time was not
proportional to the work. ``python -m experiments.bench.linearity`` measures linearity.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import asdict
from typing import Any, TypeVar

from experiments.calibration import Calibration, LeastCpu
from experiments.device_profiles import DeviceProfile

SameWork = Callable[[tuple[Any, ...], Any], Hashable]
T = TypeVar("T")


def stretch(work: Callable[..., Any], factor: Callable[[], float],
            same_work: SameWork | None = None,
            least_cpu: LeastCpu | None = None) -> Callable[..., Any]:
    """``work`` made to take ``factor()`` × its CPU time on this thread (see the module
    docstring); if the host was slower than that, it took what it took.

    ``same_work(args, out)`` names the work a call did (a model call: the function, config
    and shapes, and whether an exit fired; an encoder: what it produced). The call is then
    priced at the least CPU time that work has taken on this host (``least_cpu``), not at
    its own: see ``LeastCpu``.
    """
    def stretched(*args: Any, **kwargs: Any) -> Any:
        cpu, wall = time.thread_time(), time.perf_counter()
        out = work(*args, **kwargs)
        used = time.thread_time() - cpu
        if same_work is not None and least_cpu is not None:
            used = least_cpu.observe(same_work(args, out), used)
        target = used * factor()
        remaining = target - (time.perf_counter() - wall)
        if remaining > 0:
            time.sleep(remaining)
        return out

    return stretched


class EmulatedDevice:
    """The device's work (``device_client.compute``) made to take as long as on the
    calibrated device: each piece at its precision's factor, times ``load()`` (a competing
    load), priced at the least CPU time this host has taken for the same work."""

    def __init__(self, fp32_factor: float, int8_factor: float,
                 load: Callable[[], float], least_cpu: LeastCpu) -> None:
        self.fp32_factor, self.int8_factor = fp32_factor, int8_factor
        self.load, self.least_cpu = load, least_cpu

    def __call__(self, name: str, fn: Callable[..., T], *args: Any, int8: bool = False) -> T:
        factor = self.int8_factor if int8 else self.fp32_factor
        stretched = stretch(fn, lambda: factor * self.load(), _same_work(name),
                            self.least_cpu)
        out: T = stretched(*args)
        return out


def _same_work(name: str) -> SameWork:
    """What makes two calls the same work: a head, its config, the input's shape and
    whether an exit fired; a finish, its config; an encoder, what it produced."""
    import hashlib

    if name == "head":
        return lambda args, out: ("head", args[1], tuple(args[0].shape),
                                  bool(out.exited.all()))
    if name == "finish":
        return lambda args, out: ("finish", args[1])
    return lambda args, out: (name, hashlib.blake2b(out, digest_size=16).hexdigest())


def emulate(client: Any, fp32_factor: float, int8_factor: float,
            load: Callable[[], float] = lambda: 1.0,
            least_cpu: LeastCpu | None = None) -> LeastCpu:
    """Make ``client`` (a DeviceClient in this process) run at the calibrated device's
    speed, through its compute seam. Returns the table of least CPU times it prices from
    (``least_cpu``, else one for this process alone); ``save`` it when done."""
    least_cpu = least_cpu or LeastCpu(client.model.spec.name, path=None)
    client.compute = EmulatedDevice(fp32_factor, int8_factor, load, least_cpu)
    return least_cpu


def describe(profile: DeviceProfile, calibration: Calibration) -> dict[str, Any]:
    """What a result reports about device emulation."""
    return {"profile": asdict(profile) | {"power": asdict(profile.power)},
            "calibration": asdict(calibration),
            "method": "CPU-time scaling (fp32 and int8 factors from MobileNetV2 anchors)"}


