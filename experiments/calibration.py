"""This host against an emulated device: the factors that turn its CPU time into the
device's, and the least CPU time each piece of work has taken here.

    anchors, per profile    MobileNetV2-224 on the device: int8 ms and fp32 ms
                            (experiments.device_profiles)
    calibration, per host   the same MobileNetV2 here, one thread, its least CPU time: fp32,
                            and int8 (torch.ao, this host's engine), measured again at the
                            start of every run and kept as the least seen
    factor(precision)     = device ms / host ms, for that precision

Both least times live in one table, runs/least_cpu.json, for this host only (its boot):
the anchor is then the least of as many runs as the work, measured under the same
conditions (a cached anchor beside a work time that kept falling made the same exit path
take 169 to 238 ms on an emulated Pi Zero 2 from run to run). Like with like: the int8
anchor is compared with the same network quantized here, the fp32 anchor with the same
network in fp32.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.device_profiles import DeviceProfile

CALIBRATION_VERSION = 4  # 4: anchors in the least-CPU table, which is per host (boot)
LEAST_CPU_FILE = Path("runs/least_cpu.json")
ANCHORS = "anchors"  # the table's scope for the MobileNetV2 anchors (keys "fp32", "int8")
ANCHOR_REPEATS = 100  # runs of each anchor per measurement (about 2.5 s here)


@functools.cache
def host_id() -> str:
    """This host as it is now: its boot (a least CPU time says nothing about another
    machine, or this one after a reboot), CPU and torch."""
    import platform

    import torch

    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = platform.node()
    return f"{boot} {platform.processor() or platform.machine()} torch {torch.__version__}"


def mobilenet_v2() -> Any:
    """torchvision's MobileNetV2 layer table, built from splitnet's own blocks (eval mode)."""
    from torch import nn

    from splitnet.model.layers import ConvBNAct, InvertedResidual

    table = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1)]  # torchvision's (t, c, n, s)
    layers: list[nn.Module] = [ConvBNAct(3, 32, stride=2)]
    channels = 32
    for expand, out, blocks, stride in table:
        for i in range(blocks):
            layers.append(InvertedResidual(channels, out, stride if i == 0 else 1, expand))
            channels = out
    layers += [ConvBNAct(channels, 1280, kernel=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(1280, 1000)]
    return nn.Sequential(*layers).eval()


def quantized(net: Any) -> Any:
    """``net`` as int8 with torch.ao (FX graph mode, this host's engine), calibrated on
    random frames: enough for timing, which is all it is used for."""
    import warnings

    import torch
    from torch.ao.quantization import get_default_qconfig_mapping, quantize_fx

    from splitnet.model.int8 import quantized_engine

    engine = quantized_engine()
    torch.backends.quantized.engine = engine
    example = (torch.rand(1, 3, 224, 224),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = quantize_fx.prepare_fx(net, get_default_qconfig_mapping(engine), example)
        with torch.no_grad():
            for _ in range(4):
                prepared(torch.rand(2, 3, 224, 224))
        return quantize_fx.convert_fx(prepared)


def least_cpu_ms(net: Any, repeats: int = 30) -> float:
    """The least CPU ms (this thread's) of one forward pass of ``net`` on a 224 px frame,
    one thread, batch 1: the same measure device work is priced by (``LeastCpu``), so that
    the anchor and the work compare like with like. A median of wall times rises with
    whatever else runs: two such calibrations of one host, minutes apart, gave 9.3 and
    12.8 ms for the int8 network."""
    import torch

    x = torch.rand(1, 3, 224, 224)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for _ in range(3):
                net(x)
            times = []
            for _ in range(repeats):
                start = time.thread_time()
                net(x)
                times.append((time.thread_time() - start) * 1000)
    finally:
        torch.set_num_threads(threads)
    return min(times)


@dataclass(frozen=True)
class Calibration:
    """This host against one profile: the MobileNetV2 times and the two factors."""

    profile: str
    host_fp32_ms: float
    host_int8_ms: float
    fp32_factor: float  # device ms per host CPU ms, fp32 work
    int8_factor: float  # device ms per host CPU ms, int8 work


# Lanes calibrate from several threads at once; FX tracing (in ``quantized``) is not
# thread-safe, and the anchors are built once per process.
_HOST_TIMES_LOCK = threading.Lock()
_ANCHOR_NETS: dict[str, Any] = {}


def host_times(path: Path | None = LEAST_CPU_FILE, measure: bool = True) -> tuple[float, float]:
    """(fp32 ms, int8 ms): the least CPU time MobileNetV2-224 has taken on this host, one
    thread, in the table at ``path``; ``measure`` runs it again first (and keeps the least).
    Call it with ``measure`` where nothing else runs: at the start of a run."""
    with _HOST_TIMES_LOCK:
        table = LeastCpu(ANCHORS, path)
        if measure or table.least("fp32") is None or table.least("int8") is None:
            if not _ANCHOR_NETS:
                _ANCHOR_NETS["fp32"] = mobilenet_v2()
                _ANCHOR_NETS["int8"] = quantized(_ANCHOR_NETS["fp32"])
            for precision, net in _ANCHOR_NETS.items():
                # as many runs as a policy's device prices its work from, or the anchor's
                # least lags the work's: 30 runs more, and the int8 anchor fell by 8 %
                table.observe(precision, least_cpu_ms(net, repeats=ANCHOR_REPEATS) / 1000)
            table.save()
        fp32_s, int8_s = table.least("fp32"), table.least("int8")
        assert fp32_s is not None and int8_s is not None
        return fp32_s * 1000, int8_s * 1000


def calibrate(profile: DeviceProfile, path: Path | None = LEAST_CPU_FILE) -> Calibration:
    """The factors that make this host's CPU time into ``profile``'s time (from the anchors
    as last measured: see ``host_times``)."""
    fp32_ms, int8_ms = host_times(path, measure=False)
    return Calibration(profile.name, fp32_ms, int8_ms,
                       profile.fp32_mobilenet_v2_ms / fp32_ms,
                       profile.int8_mobilenet_v2_ms / int8_ms)


class LeastCpu:
    """The least CPU time each piece of device work has taken on this host, shared by
    every emulated device of a model through a file.

    The host's CPU time for the same convolutions rises with what else it runs (caches,
    memory bandwidth): in a grid cell, where each policy's device is its own process beside
    another lane, the int8 network's exit path was priced from 19.4 to 26.8 ms on an
    emulated Pi 4 depending on the process, the same work. A device runs alone: its work is
    priced at the least this host has taken for it, in any process. Each process starts
    from the file and merges what it found back into it (``save``, under a lock).
    """

    def __init__(self, scope: str, path: Path | None = LEAST_CPU_FILE) -> None:
        self.scope, self.path = scope, path
        self.seconds: dict[str, float] = self._read().get(scope, {}) if path else {}

    def observe(self, work: Hashable, used_s: float) -> float:
        """Record that ``work`` took ``used_s`` CPU seconds; returns the least it has taken,
        this time included (what the work is priced at)."""
        key = repr(work)
        least = self.seconds[key] = min(self.seconds.get(key, used_s), used_s)
        return least

    def least(self, work: Hashable) -> float | None:
        """The least CPU seconds ``work`` has taken so far, if it has run."""
        return self.seconds.get(repr(work))

    def save(self) -> None:
        """Merge this process's least times into the shared file (under its lock)."""
        if self.path is None:
            return
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(self.path.with_suffix(".lock")):
            saved = self._read()
            mine = saved.setdefault(self.scope, {})
            for key, seconds in self.seconds.items():
                mine[key] = min(mine.get(key, seconds), seconds)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"version": CALIBRATION_VERSION, "host": host_id(),
                                       "scopes": saved}))
            tmp.replace(self.path)

    def _read(self) -> dict[str, dict[str, float]]:
        """The saved table, if it was saved by this version on this host (else empty)."""
        assert self.path is not None
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if saved.get("version") != CALIBRATION_VERSION or saved.get("host") != host_id():
            return {}
        scopes: dict[str, dict[str, float]] = saved.get("scopes", {})
        return scopes


