"""Every constant the device's estimators, probing and fallback were set to, in one place,
with what each was chosen on. They are frozen: a change here is a change of the system, to
be scored on data that did not choose it (docs/tuning.md keeps the list of what was tuned
on what; the grid's headline cells are held out from all of it).

"Scored traces" below are the shipped traces the earlier grids scored on (ATT-LTE-driving,
TMobile-LTE-short, Verizon-LTE-short at the grid's old offsets): a constant chosen on them
is not evidence on them, which is why the headline grid uses Verizon-EVDO-driving and new
offsets (experiments.scenario.HELD_OUT_CELLS).
"""

from __future__ import annotations

# ---------------------------------------------------------------- bandwidth
BANDWIDTH_PRIOR_BPS = 1e6  # a guess until the first sample; by reasoning (a slow LTE uplink)
BANDWIDTH_WINDOW = 5  # samples in the median; scored traces (probe study)
MIN_SAMPLE_BYTES = 1500  # one MTU: a smaller transfer times the link's latency, not its rate
SETTLE_SAMPLES = 3  # samples before the estimate counts as settled; scored traces
SETTLE_PROBE_S = 0.2  # probe spacing until settled; by reasoning (a few probes at start-up)
# the window is "unsettled" (the link changed) when its samples lie this far apart, and an
# idle device then probes at this fraction of its probe interval; scored traces (the probe
# study, and the ATT / Pi Zero 2 cells of an earlier grid)
UNSETTLED_SPREAD = 2.0
UNSETTLED_PROBE_FRACTION = 0.2
PROBE_INTERVAL_S = 5.0  # idle probing; by its data cost (README: "Probing")
PROBE_TRANSFER_MS = 50.0  # a padded probe is sized to take about this long at the estimate
MIN_TIMED_PROBE_MS = 20.0  # faster than this, a probe met a burst: sent again, larger;
# scored traces (cellular delivery bursts of a few kB)

# ---------------------------------------------------------------- RTT and the edge
RTT_PRIOR_MS = 20.0  # by reasoning (a near edge over LTE)
RTT_WINDOW = 9  # samples; the least of them is the path's own delay; scored traces
SERVER_QUEUE_WEIGHT = 0.3  # EWMA weight of a reported queue delay; by reasoning
SERVER_COMPUTE_WEIGHT = 0.2  # EWMA weight of a measured edge ms per MMAC; by reasoning

# ---------------------------------------------------------------- the device's own speed
HEAD_SPEED_WINDOW = 5  # samples in each median (one stalled input must not move the plan)
# how fast a per-config slowdown is forgotten once the config stops being run: the same
# half-life as a failed offload's, the idle probe interval; by that reasoning, not on a
# scenario (the busy-device scenario that scores it did not choose it)
HEAD_SPEED_HALF_LIFE_S = 5.0
SEND_OVERHEAD_WINDOW = 5  # samples of a sent input's extra device time; by reasoning

# ---------------------------------------------------------------- failures and fallback
FAILURE_WEIGHT = 0.1  # EWMA weight of one offload's outcome; by reasoning
FAILURE_HALF_LIFE_S = 5.0  # a failure ages like the probe interval; by reasoning
MIN_OFFLOAD_TIMEOUT_MS = 200.0  # a short stall of a cellular link is not an outage;
# scored traces (gaps of over 100 ms are about 17 % of the driving traces' time)
MAX_OFFLOAD_TIMEOUT_MS = 10_000.0
BACKOFF_INITIAL_S = 0.25  # probing a failed edge: first retry, then doubling ...
BACKOFF_MAX_S = 5.0  # ... up to this; by reasoning
BACKOFF_JITTER = 0.2
