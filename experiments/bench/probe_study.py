"""What idle probing buys and costs: the bandwidth estimate of a device that sends nothing,
against the true one-second capacity, on the shipped traces (offline, in seconds).

    for each trace, each start (the grid's three, and ten more spread over the trace),
    each probing plan (interval, interval while unsettled, probe length, samples kept):
        three settle probes 0.2 s apart, then one an interval after the last ended (the
        shorter one while the estimator's window is unsettled, as
        ``BandwidthEstimator.stale`` does), each timed on the trace:
        padding for ``probe ms`` at the current estimate (≥ 3 kB), sent again 4× larger
        while it crosses in under 20 ms, given up after 2 s (an upper bound kept), as
        ``DeviceClient.probe_once`` does
        ─► BandwidthEstimator (the device's own class: median of the samples kept)
    at 10 inputs a second: |estimate − capacity of the second around the input| ÷ capacity
        ─► median per run; per plan: the median and worst run, and what the periodic
           probes cost once settled (the share of the link they hold, megabytes an hour)

This is the situation of a Pi 4 in the camera grid, which runs everything locally: its
estimate comes from probes alone. The link is modelled as the trace's delivery
opportunities (1500 bytes each), without queueing behind the device's own traffic.

Usage: ``python -m experiments.bench.probe_study [--json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np
from splitnet_proto.messages import MAX_PROBE_PADDING_BYTES

from device_client.estimators import BandwidthEstimator
from device_client.tuning import MIN_TIMED_PROBE_MS
from experiments.grid import GRID_TRACES
from experiments.traces import PACKET_BYTES, Trace

SETTLE_PROBES, SETTLE_GAP_S, RATE_HZ = 3, 0.2, 10.0
TIMEOUT_MS = 2000.0  # the monitor's probe timeout


@dataclass(frozen=True)
class ProbePlan:
    interval_s: float  # one probe per interval while the device sends nothing
    unsettled_s: float  # ... or per this one while the estimator's window is unsettled
    probe_ms: float  # padding for this long at the current estimate
    window: int  # samples the estimator keeps

    @property
    def name(self) -> str:
        unsettled = f" ({self.unsettled_s:g} s unsettled)" \
            if self.unsettled_s < self.interval_s else ""
        return f"every {self.interval_s:g} s{unsettled}, {self.probe_ms:g} ms, " \
               f"median of {self.window}"


PLANS = (ProbePlan(5.0, 1.0, 50.0, 5),  # the device client's defaults
         ProbePlan(5.0, 5.0, 50.0, 5),  # before the unsettled rule
         ProbePlan(5.0, 1.0, 200.0, 5),  # longer probes: about the default's data
         ProbePlan(2.0, 2.0, 50.0, 5), ProbePlan(1.0, 1.0, 50.0, 3),
         ProbePlan(1.0, 1.0, 25.0, 5), ProbePlan(0.5, 0.5, 25.0, 3))


def transfer_ms(trace: Trace, start_ms: float, num_bytes: int) -> float:
    """How long ``num_bytes`` sent at ``start_ms`` take to cross: until the opportunity
    that carries their last packet."""
    last = trace.opportunities_between(0, start_ms) + math.ceil(num_bytes / PACKET_BYTES) - 1
    loops, index = divmod(last, len(trace.opportunities_ms))
    return loops * trace.period_ms + float(trace.opportunities_ms[index]) - start_ms


def one_run(trace: Trace, start_s: float, seconds: float, plan: ProbePlan) -> dict[str, float]:
    """The median relative error of one run, and the bytes and link time its probes took."""
    estimator = BandwidthEstimator(window=plan.window)
    t0 = start_s * 1000
    inputs = [t0 + 1000 * SETTLE_GAP_S * SETTLE_PROBES + 1000 * i / RATE_HZ
              for i in range(int(seconds * RATE_HZ))]
    errors: list[float] = []
    sent_bytes, busy_ms, done, due, settled_at = 0, 0.0, 0, t0, t0
    for t in inputs:
        while due <= t:  # one monitor thread: each probe is timed from the last one's end
            at = due
            padding = int(np.clip(estimator.estimate_bps / 8 * plan.probe_ms / 1000, 3000,
                                  MAX_PROBE_PADDING_BYTES))
            periodic = done >= SETTLE_PROBES  # the steady cost leaves the start-up out
            while True:
                took = transfer_ms(trace, at, padding)
                if periodic:
                    sent_bytes += padding
                    busy_ms += min(took, TIMEOUT_MS)
                if took >= MIN_TIMED_PROBE_MS or padding >= MAX_PROBE_PADDING_BYTES:
                    break
                at, padding = at + took, min(4 * padding, MAX_PROBE_PADDING_BYTES)
            if took > TIMEOUT_MS:  # the client gives up, and keeps the bound
                estimator.add_timeout(padding, TIMEOUT_MS)
            else:
                estimator.add_sample(padding, max(took, 1.0))
            done += 1
            if done == SETTLE_PROBES:
                settled_at = at + min(took, TIMEOUT_MS)
            gap_s = SETTLE_GAP_S if done < SETTLE_PROBES else \
                plan.unsettled_s if estimator.unsettled else plan.interval_s
            due = at + min(took, TIMEOUT_MS) + 1000 * gap_s
        true = trace.capacity_bps(t - 500, t + 500)
        if true > 0:
            errors.append(abs(estimator.estimate_bps - true) / true)
    steady_ms = max(inputs[-1] - settled_at, 1.0)
    return {"median_error": statistics.median(errors) if errors else math.nan,  # an outage
            "bytes": sent_bytes,
            "link_share": busy_ms / steady_ms, "seconds": steady_ms / 1000}


def study(plans: tuple[ProbePlan, ...] = PLANS, seconds: float = 5.0) -> dict[str, Any]:
    out: dict[str, Any] = {"run_seconds": seconds, "traces": {}}
    for name in GRID_TRACES:
        trace = Trace.load(name)
        period_s = trace.period_ms / 1000
        starts = [265.0, 280.0, 295.0] + [period_s * (k + 0.5) / 10 for k in range(10)]
        rows = []
        for plan in plans:
            runs = [one_run(trace, s % period_s, seconds, plan) for s in starts]
            errors = [r["median_error"] for r in runs if not math.isnan(r["median_error"])]
            per_hour = 3600 / sum(r["seconds"] for r in runs) * sum(r["bytes"] for r in runs)
            rows.append({"plan": plan.name, "median_error": statistics.median(errors),
                         "worst_run_error": max(errors),
                         "link_share": statistics.mean(r["link_share"] for r in runs),
                         "probe_megabytes_per_hour": per_hour / 1e6})
        out["traces"][name] = {"mean_mbps": trace.mean_bps() / 1e6, "plans": rows}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.bench.probe_study",
        description=__doc__.split("\n\n")[0] + " Compares idle probing plans: the device's "
                    "default (a 50 ms probe every 5 s, every 1 s while the window is "
                    "unsettled, median of 5), the same without the unsettled rule, "
                    "longer probes, and faster ones.")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="length of each run (default: %(default)s, a Pi 4's 50 inputs)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = study(seconds=args.seconds)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print("| trace | probing | median error | worst run | link share | probe MB/hour |")
    print("|---|---|---|---|---|---|")
    for name, data in result["traces"].items():
        for row in data["plans"]:
            print(f"| {name} | {row['plan']} | {row['median_error']:.2f} | "
                  f"{row['worst_run_error']:.2f} | {100 * row['link_share']:.1f} % | "
                  f"{row['probe_megabytes_per_hour']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
