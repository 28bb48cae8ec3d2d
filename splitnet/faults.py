"""Fault injection at named points of the runtime: an exception, a hang or a slow call.

    SPLITNET_FAULTS="edge.batch=exception*3, device.sink=hang"    (or faults.install(...))
    code: faults.point("edge.batch")  ─► no-op unless a fault is planned there
                                       ─► exception: raise InjectedFaultError
                                       ─► hang:      block for ``seconds`` (default an hour)
                                       ─► slow:      sleep ``seconds`` (default 0.5), go on

A plan entry is ``POINT=KIND[:SECONDS][*TIMES][+AFTER][%EVERY]``: fire ``TIMES`` times
(default once, ``*0`` for ever), on every ``EVERY``-th call (default each), after letting
``AFTER`` calls pass. The points, by side:

    edge.batch       the batch worker, before the model runs a batch
    edge.on_batch    the batch worker's metrics call after a batch
    edge.publisher   the load feed's publisher, each round
    device.reader    the stream reader, per reply
    device.monitor   the probe monitor, each round
    device.feed      the load-feed subscriber, each round
    device.camera    the frame source, per frame
    device.head      the head stage of a frame stream, per frame
    device.edge      the edge stage of a frame stream, per frame
    device.sink      where results are written, per result

With no plan, ``point`` is one dictionary lookup: it stays in production code.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass

POINTS = ("edge.batch", "edge.on_batch", "edge.publisher", "device.reader", "device.monitor",
          "device.feed", "device.camera", "device.head", "device.edge", "device.sink")
KINDS = ("exception", "hang", "slow")
DEFAULT_SECONDS = {"hang": 3600.0, "slow": 0.5, "exception": 0.0}


class InjectedFaultError(RuntimeError):
    """The exception an ``exception`` fault raises."""


@dataclass
class Fault:
    kind: str
    seconds: float
    times: int = 1  # 0: for ever
    after: int = 0
    every: int = 1
    calls: int = 0
    fired: int = 0


_plan: dict[str, Fault] = {}
_lock = threading.Lock()


def parse(text: str) -> dict[str, Fault]:
    """A plan from its text form (see the module docstring); ValueError names the problem."""
    plan: dict[str, Fault] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        match = re.fullmatch(
            r"([\w.]+)=(\w+)(?::([0-9.]+))?(?:\*(\d+))?(?:\+(\d+))?(?:%(\d+))?", entry)
        if match is None:
            raise ValueError(f"fault {entry!r}: expected "
                             "POINT=KIND[:SECONDS][*TIMES][+AFTER][%EVERY]")
        point, kind, seconds, times, after, every = match.groups()
        if point not in POINTS:
            raise ValueError(f"fault {entry!r}: unknown point {point!r}; points: {POINTS}")
        if kind not in KINDS:
            raise ValueError(f"fault {entry!r}: unknown kind {kind!r}; kinds: {KINDS}")
        plan[point] = Fault(kind, float(seconds) if seconds else DEFAULT_SECONDS[kind],
                            int(times) if times else 1, int(after) if after else 0,
                            max(int(every), 1) if every else 1)
    return plan


def install(plan: dict[str, Fault] | str) -> None:
    """Replace the plan (a dict, or its text form)."""
    global _plan
    with _lock:
        _plan = parse(plan) if isinstance(plan, str) else dict(plan)


def clear() -> None:
    install({})


def fired(point: str) -> int:
    """How many times the fault at ``point`` has fired."""
    fault = _plan.get(point)
    return 0 if fault is None else fault.fired


def point(name: str) -> None:
    """Where a fault may be injected; see the module docstring."""
    fault = _plan.get(name)
    if fault is None:
        return
    with _lock:
        fault.calls += 1
        due = (fault.calls > fault.after and (fault.calls - fault.after) % fault.every == 0
               and (fault.times == 0 or fault.fired < fault.times))
        if due:
            fault.fired += 1
    if not due:
        return
    if fault.kind == "exception":
        raise InjectedFaultError(f"fault injected at {name}")
    time.sleep(fault.seconds)


if os.environ.get("SPLITNET_FAULTS"):
    install(os.environ["SPLITNET_FAULTS"])
