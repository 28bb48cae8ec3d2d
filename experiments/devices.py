"""Emulated devices: this host's CPU time on the device's work, scaled to the device's speed.

    anchors, per profile    MobileNetV2-224 on the device: int8 ms and fp32 ms
    calibration, per host   the same MobileNetV2 here, one thread, its least CPU time: fp32,
                            and int8 (torch.ao, this host's engine), measured again at the
                            start of every run and kept as the least seen
    factor(precision)     = device ms / host ms, for that precision

    device work (a model call, an image or feature encode), c = the least CPU time the same
    work has taken on this host (this thread's, shared by every emulated device; see
    ``stretch`` and ``LeastCpu``), w = its wall time
        ─►  sleep max(f·c − w, 0)  ─►  it took f·c: proportional to the work

Both least times live in one table, runs/least_cpu.json, for this host only (its boot):
the anchor is then the least of as many runs as the work, measured under the same
conditions. When the anchor was measured once and cached while the work's least kept
falling with every run, this host's emulated Pi Zero 2 ran the same exit path
(`local-exit`) in 238 ms in one grid and 169 ms in a run one session later.

Each piece of work is priced in the precision it runs in: an int8 device head at the int8
factor, everything else at the fp32 one. Like with like: the int8 anchor is compared with
the same network quantized here, the fp32 anchor with the same network in fp32.

Why not a CFS quota (the previous method): with a 10 ms period and a 13 % quota, any job
under 1.3 ms of CPU runs at full speed and longer ones finish at the period's phase, so
emulated time was not proportional to the work (a 60 %-of-the-network exit path took as
long as the whole network). ``python -m experiments.devices --json`` measures linearity.

Anchors and assumptions, stated once:
- rpi4 int8: PyTorch's tutorial "Real Time Inference on Raspberry Pi 4 (30 fps!)" runs
  the quantized MobileNetV2 (qnnpack) at about 30 fps: 33 ms per frame. Assumed to be the
  per-inference time of the device's CPU.
- rpi4 fp32: assumed 4x the int8 time (133 ms): on the Cortex-A72, qnnpack's int8 kernels
  do four 8-bit multiply-accumulates per 32-bit lane and move a quarter of the bytes. No
  published Pi 4 fp32 figure from the same tutorial was available to us; replace this
  with a measurement on a real Pi 4 when there is one.
- rpi3: assumed 3x slower than the Pi 4 (Cortex-A53 at 1.4 GHz vs A72 at 1.5 GHz).
- pizero2: assumed 6x slower than the Pi 4 (Cortex-A53 at 1 GHz, 512 MB).
- Work outside model calls and encoders (planning, bookkeeping) is not scaled: on the
  host it is well under a millisecond.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from device_client.energy import RPI4, PowerProfile

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


@dataclass(frozen=True)
class DeviceProfile:
    """A device to emulate: MobileNetV2-224 time on its CPU per precision, and its power."""

    name: str
    int8_mobilenet_v2_ms: float
    fp32_mobilenet_v2_ms: float
    power: PowerProfile
    description: str


PROFILES = {
    "rpi4": DeviceProfile(
        "rpi4", 33.3, 133.0, RPI4,
        "Raspberry Pi 4 Model B: quantized MobileNetV2-224 at ~30 fps (PyTorch's Raspberry "
        "Pi tutorial), fp32 assumed 4x slower; 2.7 W idle, 6.4 W loaded"),
    "rpi3": DeviceProfile(
        "rpi3", 100.0, 400.0, PowerProfile(name="rpi3", idle_w=1.9, busy_w=5.1),
        "Raspberry Pi 3 Model B+: assumed 3x slower than the Pi 4; 1.9 W idle, 5.1 W loaded"),
    "pizero2": DeviceProfile(
        "pizero2", 200.0, 800.0, PowerProfile(name="pizero2", idle_w=0.6, busy_w=3.0),
        "Raspberry Pi Zero 2 W: assumed 6x slower than the Pi 4; 0.6 W idle, 3.0 W loaded"),
}


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
    the anchor and the work compare like with like. A median of wall times, used before,
    rose with whatever else ran: two calibrations of this host, minutes apart, gave 9.3
    and 12.8 ms for the int8 network."""
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


SameWork = Callable[[tuple[Any, ...], Any], Hashable]
T = TypeVar("T")


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


# ---------------------------------------------------------------------- linearity benchmark
def _constant(value: float) -> Callable[[], float]:
    return lambda: value


def _cpu_work(host_ms: float) -> Callable[[], None]:
    """A piece of work taking about ``host_ms`` of CPU here (matrix products, one thread).

    Sized from a timed run of itself, twice: the first 20 products ran slower each than a
    long run does, and a count taken from them alone made the 300 ms piece 181 ms."""
    import torch

    a = torch.rand(128, 128)
    count = 20
    for _ in range(2):
        start = time.thread_time()
        for _ in range(count):
            a @ a
        per_product_ms = max((time.thread_time() - start) * 1000 / count, 1e-4)
        count = max(int(round(host_ms / per_product_ms)), 1)

    def work() -> None:
        for _ in range(count):
            a @ a

    return work


def linearity(sizes_ms: tuple[float, ...] = (1, 3, 10, 30, 100, 300),
              repeats: int = 5) -> dict[str, Any]:
    """Per profile and work size: emulated time ÷ (host CPU time × factor), median of
    ``repeats``. 1.0 is perfectly proportional; the target is within 10 %."""
    import torch

    torch.set_num_threads(1)
    results: dict[str, Any] = {}
    for name, profile in PROFILES.items():
        factor = calibrate(profile).fp32_factor
        rows = []
        for size in sizes_ms:
            work = _cpu_work(size)
            ratios, host = [], []
            for _ in range(repeats):
                cpu = time.thread_time()
                wall = time.perf_counter()
                stretch(work, _constant(factor))()
                emulated = time.perf_counter() - wall
                spent = time.thread_time() - cpu
                ratios.append(emulated / (spent * factor))
                host.append(spent * 1000)
            rows.append({"host_ms": statistics.median(host),
                         "emulated_ms": statistics.median(host) * factor
                         * statistics.median(ratios),
                         "ratio": statistics.median(ratios)})
        worst = max(abs(r["ratio"] - 1) for r in rows)
        results[name] = {"factor": factor, "sizes": rows, "worst_deviation": worst,
                         "met": worst <= 0.10}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.devices",
        description="Device emulation: the calibration of this host against each profile, "
                    "and a linearity benchmark: pieces of CPU work from 1 to 300 ms here, "
                    "run under each profile's emulation; emulated ÷ (host CPU × factor) "
                    "should stay within 10 % of 1 at every size.")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    host_times()  # measured now, the least seen kept
    result = {"calibration": {name: asdict(calibrate(p)) for name, p in PROFILES.items()},
              "linearity": linearity()}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    for name, row in result["linearity"].items():
        ratios = ", ".join(f"{r['host_ms']:.0f} ms: {r['ratio']:.3f}" for r in row["sizes"])
        print(f"{name:8} factor {row['factor']:6.2f}  {ratios}  "
              f"{'met' if row['met'] else 'NOT met'}", file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
