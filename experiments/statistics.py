"""Paired comparisons with intervals, and verdicts that say when the data cannot decide.

    per repetition r (same frames, same trace offset): ratio_r = A_r / B_r
    ─► log ratios ─► mean ± t(0.975, n − 1) · sd / √n ─► exp ─► geometric-mean ratio and
       its 95 % interval
    several cells ─► each cell's mean log ratio, averaged; the variance of that average from
       the cells' own (Welch–Satterthwaite degrees of freedom)
    verdict(interval, target): "met" when the whole interval meets the target, "not met"
       when none of it does, "not resolved" when it straddles the target

Ratios are of means over a repetition's frames (a policy's mean response time in that
repetition), so each repetition is one paired observation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

MET, NOT_MET, NOT_RESOLVED = "met", "not met", "not resolved"


@dataclass(frozen=True)
class Ratio:
    """A geometric-mean ratio with its 95 % interval (None where one observation only)."""

    value: float
    low: float | None
    high: float | None
    n: int

    def as_dict(self) -> dict[str, float | int | None]:
        return {"ratio": self.value, "ci95_low": self.low, "ci95_high": self.high,
                "repetitions": self.n}

    def __str__(self) -> str:
        if self.low is None or self.high is None:
            return f"{self.value:.2f}"
        return f"{self.value:.2f} [{self.low:.2f}, {self.high:.2f}]"


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> Ratio:
    """The geometric mean of a_r / b_r over paired repetitions, with a t interval on the
    log ratios."""
    if len(a) != len(b) or not a:
        raise ValueError("paired ratios need the same, non-zero number of repetitions")
    logs = np.log(np.asarray(a, float)) - np.log(np.asarray(b, float))
    return _from_logs(float(logs.mean()), _sem2(logs), len(logs) - 1, len(logs))


def pooled_ratio(cells: Sequence[tuple[Sequence[float], Sequence[float]]]) -> Ratio:
    """The geometric mean over cells of each cell's paired ratio (every cell weighs the
    same), with an interval from the cells' own spreads."""
    means, variances, dofs = [], [], []
    for a, b in cells:
        logs = np.log(np.asarray(a, float)) - np.log(np.asarray(b, float))
        means.append(float(logs.mean()))
        variances.append(_sem2(logs))
        dofs.append(len(logs) - 1)
    k = len(means)
    mean = float(np.mean(means))
    if any(v is None for v in variances):
        return Ratio(math.exp(mean), None, None, sum(d + 1 for d in dofs))
    var_terms = [v / k ** 2 for v in variances if v is not None]
    variance = sum(var_terms)
    # Welch–Satterthwaite: the degrees of freedom of a sum of independent variances
    denominator = sum(t ** 2 / d for t, d in zip(var_terms, dofs, strict=True) if d > 0)
    dof = variance ** 2 / denominator if denominator > 0 else 1.0
    return _from_logs(mean, variance, dof, sum(d + 1 for d in dofs))


def verdict(ratio: Ratio, target: float, at_most: bool = True) -> str:
    """Whether ``ratio`` meets ``target`` (≤ when ``at_most``, else ≥) over its whole
    interval, misses it over its whole interval, or cannot say."""
    low = ratio.value if ratio.low is None else ratio.low
    high = ratio.value if ratio.high is None else ratio.high
    if at_most:
        return MET if high <= target else NOT_MET if low > target else NOT_RESOLVED
    return MET if low >= target else NOT_MET if high < target else NOT_RESOLVED


def mean_interval(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and the half-width of its 95 % t interval (None for one value)."""
    array = np.asarray(values, float)
    if len(array) < 2:
        return float(array.mean()), None
    half = float(stats.t.ppf(0.975, len(array) - 1) * array.std(ddof=1) / math.sqrt(len(array)))
    return float(array.mean()), half


def _sem2(logs: np.ndarray) -> float | None:
    """The squared standard error of the mean (None for one observation)."""
    return float(logs.var(ddof=1) / len(logs)) if len(logs) > 1 else None


def _from_logs(mean: float, variance: float | None, dof: float, n: int) -> Ratio:
    if variance is None or dof <= 0:
        return Ratio(math.exp(mean), None, None, n)
    half = float(stats.t.ppf(0.975, dof)) * math.sqrt(variance)
    return Ratio(math.exp(mean), math.exp(mean - half), math.exp(mean + half), n)
