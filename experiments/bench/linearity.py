"""Device emulation, checked: this host's calibration against each profile, and pieces of
CPU work from 1 to 300 ms run under each profile's emulation; emulated ÷ (host CPU ×
factor) should stay within 10 % of 1 at every size. Prints JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from experiments.calibration import calibrate, host_times
from experiments.device_profiles import PROFILES
from experiments.emulation import stretch


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
        prog="python -m experiments.bench.linearity",
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

