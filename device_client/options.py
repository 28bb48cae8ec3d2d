"""The device client's settings, in three groups, each with defaults that need no change.

    PolicyOptions  what to optimise: the policy, a deadline, an accuracy floor
    LinkOptions    how to reach the edge: token, TLS, timeouts, probing, the load feed
    DeviceOptions  the device itself: its battery and its power profile
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from device_client import tuning
from device_client.battery import Battery
from device_client.energy import RPI4, PowerProfile
from splitnet.config import Config


@dataclass(frozen=True)
class PolicyOptions:
    """What the device optimises (``device_client.planner``)."""

    name: str = "adaptive"  # or local, local-exit, offload-input, neurosurgeon, ...
    deadline_ms: float | None = None  # preferred per-frame latency, when reachable
    accuracy_floor: float | None = None  # default: the whole network's accuracy − 1 point
    fixed_config: Config | None = None  # the config of policy "fixed" (default: chosen)


@dataclass(frozen=True)
class LinkOptions:
    """How the device reaches its edge (``device_client.edge``, ``device_client.replicas``)."""

    token: str | None = None  # the bearer token, if the edge asks for one
    tls_ca: Path | None = None  # turns TLS on: the CA that signed the edge's certificate
    tls_identity: tuple[Path, Path] | None = None  # (certificate, key) for mutual TLS
    offload_timeout_ms: float | None = None  # default: from the plan (ski-rental rule)
    probe_interval_s: float = tuning.PROBE_INTERVAL_S  # idle bandwidth probes
    monitor: bool = True  # probe a failed edge, and an idle link, in the background
    load_feed: str | None = None  # the edge's ZMQ load feed, e.g. tcp://edge:50052


@dataclass(frozen=True)
class DeviceOptions:
    """The device itself (``device_client.battery``, ``device_client.energy``)."""

    battery: str | Battery = "auto"  # "auto" (the system's), "1.0", "sim:0.3", or a Battery
    power: PowerProfile = RPI4
