"""What the device knows right now: bandwidth, RTT, server load, its own speed, battery.

    offload replies ──► transfer time = total − server time − RTT ──► BandwidthEstimator
    probe pairs     ──► (empty probe: RTT) (padded probe: RTT + padding/bandwidth) ──┘
    replies / ZMQ   ──► ServerLoadEstimator (queue ms, edge ms per MMAC)
    head timings    ──► HeadSpeedEstimator (measured ÷ profiled: overall, and per config)
    offload outcomes ─► FailureRateEstimator (share not answered in time)
    client overhead ──► SendOverheadEstimator (a sent input's extra device time, by placement)
                        └──────────────► Estimates (one frozen snapshot per input)
"""

from __future__ import annotations

import collections
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from device_client import tuning
from splitnet.config import Config, Placement

# Where estimators read the time (seconds, monotonic): time.monotonic on a device; a
# simulator passes its own clock (see device_client.knowledge).
Clock = Callable[[], float]


@dataclass(frozen=True)
class Estimates:
    """A snapshot the planner decides from."""

    bandwidth_bps: float
    rtt_ms: float
    server_queue_ms: float
    edge_ms_per_mmac: float
    head_speed_factor: float
    battery_level: float
    edge_available: bool
    # per config (without its exit), measured ÷ profiled device time, once it has samples
    config_speed_factors: Mapping[Config, float] = field(default_factory=dict)
    # per precision (True: int8), for configs not run yet, once that precision has samples
    precision_speed_factors: Mapping[bool, float] = field(default_factory=dict)
    # the recent share of offloads the edge did not answer in time
    offload_failure_rate: float = 0.0
    # the device's own extra time for an input that is sent (building the request,
    # reading the reply) over one finished locally, per placement, once measured
    send_overhead_ms: Mapping[Placement, float] = field(default_factory=dict)


class BandwidthEstimator:
    """Uplink throughput: the median of the most recent samples.

    Cellular links deliver in bursts, so a single sample can land in a gap between
    delivery opportunities; the median ignores such outliers in either direction. A
    transfer that times out adds an upper-bound sample (bytes over the time waited), so a
    run of timeouts in an outage pulls the estimate down; fresh samples pull it back up.
    The first sample replaces the prior: a guess must not outvote a measurement (where a
    device sends little, a probe comes only every few seconds, and the median of the prior
    and one probe is their mean).

    A window whose samples lie more than ``UNSETTLED_SPREAD`` apart is *unsettled*: the
    link changed (an outage began or ended) and the median still straddles the change.
    A device that sends nothing then probes five times as often (every second, not every
    5 s) until the window agrees again (see ``stale``). Without it, an emulated Pi Zero 2
    kept 43 frames local after an outage, at 470-594 ms each while offloads took 230 ms:
    its estimate came from idle probes alone, one every 5 s. Offline on the shipped
    traces (``python -m experiments.bench.probe_study --seconds 20``) it cuts the worst start's
    error (ATT / Verizon / T-Mobile: 0.57 / 0.55 / 0.89, against 0.98 / 1.08 / 2.48 when
    probing every 5 s only) for 55-75 % of the data of probing every second.
    """

    UNSETTLED_SPREAD = tuning.UNSETTLED_SPREAD

    def __init__(self, initial_bps: float = tuning.BANDWIDTH_PRIOR_BPS,
                 window: int = tuning.BANDWIDTH_WINDOW,
                 min_sample_bytes: int = tuning.MIN_SAMPLE_BYTES,
                 settle_samples: int = tuning.SETTLE_SAMPLES,
                 clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.initial_bps = initial_bps
        self.settle_samples = min(settle_samples, window)
        self._samples: collections.deque[float] = collections.deque([initial_bps],
                                                                   maxlen=window)
        self._prior = True  # the only value is the initial guess
        self.min_sample_bytes = min_sample_bytes
        self.last_sample_at = float("-inf")
        self._lock = threading.Lock()

    def restart(self) -> None:
        """Forget every sample (back to the prior, and stale at once, so the next probe
        is due): for samples that timed a loaded process, not the link."""
        with self._lock:
            self._samples.clear()
            self._samples.append(self.initial_bps)
            self._prior = True
            self.last_sample_at = float("-inf")

    def _append(self, bps: float) -> None:
        if self._prior:
            self._samples.clear()
            self._prior = False
        self._samples.append(bps)
        self.last_sample_at = self.clock()

    def add_sample(self, num_bytes: int, transfer_ms: float) -> bool:
        """Record a timed transfer; ignored when too small or too fast to time."""
        if num_bytes < self.min_sample_bytes or transfer_ms <= 0.5:
            return False
        with self._lock:
            self._append(num_bytes * 8 / (transfer_ms / 1000))
        return True

    def add_timeout(self, num_bytes: int, waited_ms: float) -> None:
        """A transfer that did not finish in ``waited_ms``: the link was at most this fast."""
        bound = max(num_bytes, self.min_sample_bytes) * 8 / max(waited_ms / 1000, 1e-3)
        with self._lock:
            self._append(min(bound, self.estimate_bps))

    @property
    def estimate_bps(self) -> float:
        return float(statistics.median(self._samples))

    @property
    def measured_samples(self) -> int:
        """Samples in the window that are measurements (0 while only the prior is)."""
        return 0 if self._prior else len(self._samples)

    @property
    def unsettled(self) -> bool:
        """The measured samples kept lie more than ``UNSETTLED_SPREAD`` apart."""
        with self._lock:
            if self._prior or len(self._samples) < 2:
                return False
            return max(self._samples) > self.UNSETTLED_SPREAD * min(self._samples)

    def stale(self, max_age_s: float, settle_s: float = tuning.SETTLE_PROBE_S,
              unsettled_s: float | None = None) -> bool:
        """Time for a probe: the latest sample is older than ``max_age_s``; or, until
        ``settle_samples`` have come since the start, ``settle_s`` after the last (one
        probe can land on a burst or in a gap, and the median needs a few); or, while the
        window is ``unsettled``, ``unsettled_s`` after the last (a fifth of ``max_age_s``
        unless given: 1 s for the 5 s default, and a device that probes rarely to save
        data still probes five times as rarely as it)."""
        age = self.clock() - self.last_sample_at
        with self._lock:
            measured = self.measured_samples
        unsettled_s = (max_age_s * tuning.UNSETTLED_PROBE_FRACTION if unsettled_s is None
                       else min(unsettled_s, max_age_s))
        return age > max_age_s or (measured < self.settle_samples and age > settle_s) \
            or (age > unsettled_s and self.unsettled)


class RttEstimator:
    """Round-trip time: the median of recent small-message round trips (what a small
    message takes), and their least (``floor_ms``: what the path itself takes).

    The two differ on a cellular uplink: even an empty message waits for the link's next
    delivery opportunity, and those come in bursts. On the emulated 10 ms Verizon link
    the median was 15-22 ms, as long as a whole 6-20 kB frame's round trip at its
    quickest (14-21 ms). A transfer's time is its round trip less the floor: less the
    median, the wait for the link was subtracted twice, the frames seemed to cross in a
    few ms and the bandwidth estimate read 1.5-2x the link's capacity.
    """

    def __init__(self, initial_ms: float = tuning.RTT_PRIOR_MS,
                 window: int = tuning.RTT_WINDOW) -> None:
        self._samples: collections.deque[float] = collections.deque([initial_ms], maxlen=window)
        self._measured: collections.deque[float] = collections.deque(maxlen=window)

    def add_sample(self, rtt_ms: float) -> None:
        if rtt_ms > 0:
            self._samples.append(rtt_ms)
            self._measured.append(rtt_ms)

    @property
    def estimate_ms(self) -> float:
        return statistics.median(self._samples)

    @property
    def floor_ms(self) -> float:
        """The least of the recent measured round trips (the prior until there is one)."""
        return min(self._measured) if self._measured else self._samples[0]


class ServerLoadEstimator:
    """The edge's queueing delay and compute speed, from replies and the ZMQ load feed."""

    def __init__(self, initial_ms_per_mmac: float = 0.05,
                 clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.queue_ms = 0.0
        self.ms_per_mmac = initial_ms_per_mmac
        self.updated_at = float("-inf")
        self._measured = False  # the first measurement replaces the guess

    def update_queue(self, queue_ms: float) -> None:
        weight = tuning.SERVER_QUEUE_WEIGHT
        self.queue_ms = (1 - weight) * self.queue_ms + weight * max(queue_ms, 0.0)
        self.updated_at = self.clock()

    def update_compute(self, compute_ms: float, tail_mmacs: float) -> None:
        if tail_mmacs > 0 and compute_ms > 0:
            measured = compute_ms / tail_mmacs
            weight = tuning.SERVER_COMPUTE_WEIGHT
            self.ms_per_mmac = measured if not self._measured else \
                (1 - weight) * self.ms_per_mmac + weight * measured
            self._measured = True


class HeadSpeedEstimator:
    """How much slower (>1) or faster (<1) the device runs than the model card says.

    The device's CPU may be shared with other work, or be a different CPU from the one the
    card was measured on. Each config keeps its own running factor once it has been run,
    because contention and precision do not slow every config alike (an int8 head and an
    fp32 one, a cache-bound early layer and a compute-bound late one). A config not run
    yet uses the running factor of its precision (int8 or fp32), or the factor over every
    sample when that precision has not run either.

    Each factor is the median of its most recent samples: a device stalls now and then (a
    garbage collection, another process waking), and one stalled input must not move the
    plan (in a grid cell, one input that took 161 ms against the usual 27 sent the adaptive
    policy to another config for the rest of the run); a lasting change moves it after
    three inputs.

    A slowdown is news that ages. A config the device stopped running (it was slow, so
    the planner sends instead) gets no new samples, and its factor would stay at the slow
    value for ever. So a per-config factor fades towards the quickest that config has been
    seen to run, halving the gap every ``half_life_s`` since its last sample; the device
    then tries it again once it looks competitive, and a real sample sets it anew.
    """

    def __init__(self, initial: float = 1.0, window: int = tuning.HEAD_SPEED_WINDOW,
                 half_life_s: float = tuning.HEAD_SPEED_HALF_LIFE_S,
                 clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.factor = initial
        self.window = window
        self.half_life_s = half_life_s
        self._recent: dict[Any, collections.deque[float]] = {}
        self._per_config: dict[Config, float] = {}
        self._quickest: dict[Config, float] = {}
        self._last_at: dict[Config, float] = {}
        self._per_precision: dict[bool, float] = {}

    def add_sample(self, measured_ms: float, profiled_ms: float,
                   config: Config | None = None, shared: bool = True) -> None:
        """``shared`` False: the sample moves ``config``'s own factor only (an offloaded
        frame's encoding says little about how fast the device runs the network)."""
        if measured_ms <= 0 or profiled_ms <= 0:
            return
        # a Pi Zero 2 runs the small model 60-100x slower than the desktop its card was
        # profiled on: the bounds only drop absurd samples (a clamp at 50 hid that)
        ratio = min(max(measured_ms / profiled_ms, 0.001), 1000.0)
        if config is not None:
            base = config.without_exit()
            self._per_config[base] = self._median_with(("config", base), ratio)
            self._quickest[base] = min(self._quickest.get(base, ratio), ratio)
            self._last_at[base] = self.clock()
        if not shared:
            return
        # the first measurement replaces the prior (the card's machine is not this one)
        self.factor = self._median_with("all", ratio)
        if config is not None:
            self._per_precision[config.int8] = self._median_with(("int8", config.int8), ratio)

    def _median_with(self, key: Any, ratio: float) -> float:
        recent = self._recent.setdefault(key, collections.deque(maxlen=self.window))
        recent.append(ratio)
        return float(statistics.median(recent))

    @property
    def per_config(self) -> dict[Config, float]:
        """A snapshot of the per-config factors (configs run at least once), each faded
        towards its quickest by the time since its last sample."""
        return self.per_config_at(self.clock())

    def per_config_at(self, now: float) -> dict[Config, float]:
        out = {}
        for base, factor in self._per_config.items():
            quickest = self._quickest[base]
            keep = 0.5 ** (max(now - self._last_at[base], 0.0) / self.half_life_s)
            out[base] = quickest + (factor - quickest) * keep
        return out

    @property
    def per_precision(self) -> dict[bool, float]:
        """A snapshot of the per-precision factors (True: int8), once each has run."""
        return dict(self._per_precision)


class FailureRateEstimator:
    """The recent share of offloads that failed: an exponentially weighted mean of
    outcomes (1 failed, 0 answered). A cellular link stalls for hundreds of milliseconds
    now and then (the shipped driving traces spend about 17 % of their time in gaps over
    100 ms), and the planner prices that risk instead of assuming every reply comes.

    The rate also fades with time, halving every ``half_life_s`` (5 s, the default interval
    between idle probes: a failure is news about the link, and ages like it). Without
    that, one timeout priced every offload dearer than running locally, the device stopped
    offloading, and with no outcome coming the rate never fell again: an emulated Pi Zero 2
    ran its last 27 frames locally over a 5-13 Mbit/s uplink after one timeout.
    """

    def __init__(self, weight: float = tuning.FAILURE_WEIGHT,
                 half_life_s: float = tuning.FAILURE_HALF_LIFE_S,
                 clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.weight = weight
        self.half_life_s = half_life_s
        self._rate = 0.0
        self._at = clock()

    def add(self, failed: bool, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        self._rate = (1 - self.weight) * self.rate_at(now) + self.weight * float(failed)
        self._at = now

    def rate_at(self, now: float) -> float:
        return self._rate * 0.5 ** (max(now - self._at, 0.0) / self.half_life_s)

    @property
    def rate(self) -> float:
        return self.rate_at(self.clock())


class SendOverheadEstimator:
    """What sending an input costs the device beyond its model, its encoding and the
    network: building the request, reading the reply.

    Each placement (LOCAL, SPLIT, OFFLOAD_INPUT) keeps the median of its recent inputs'
    client overhead (a result's time outside the model and the network); the cost of
    sending is the difference from LOCAL's. On an emulated Pi Zero 2 a split input spent
    15-20 ms there against 1.7 ms for a local one, which a planner that priced only the
    model and the network never saw. The encoding is not in it: it is timed with the
    head, as the card times it (counted in both, a Pi Zero 2's offload of a 28 × 28 PNG
    was priced 85-91 ms where it took 60).
    """

    def __init__(self, window: int = tuning.SEND_OVERHEAD_WINDOW) -> None:
        self._recent: dict[Placement, collections.deque[float]] = {}
        self.window = window

    def add_sample(self, placement: Placement, overhead_ms: float) -> None:
        recent = self._recent.setdefault(placement, collections.deque(maxlen=self.window))
        recent.append(max(overhead_ms, 0.0))

    @property
    def extra_ms(self) -> dict[Placement, float]:
        """Per sent placement, its extra ms over a local input, once both have run."""
        local = self._recent.get(Placement.LOCAL)
        if not local:
            return {}
        base = statistics.median(local)
        return {placement: max(statistics.median(recent) - base, 0.0)
                for placement, recent in self._recent.items()
                if placement is not Placement.LOCAL and recent}
