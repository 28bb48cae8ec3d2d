"""Scenarios: small data files (TOML) describing one experiment, checked when loaded.

    [scenario]                     # experiments/scenarios/default.toml
    name = "default"
    trace = "ATT-LTE-driving.up"   # a file in ../shared/traces, or any Mahimahi trace path
    scale = 1.0                    # 0.05 for an IoT-class uplink
    trace_start_s = 300            # where in the trace the run starts
    rtt_ms = 40                    # fixed RTT, split evenly over the two directions
    loss = 0.0                     # per-packet loss, emulated as TCP retransmission delay
    device = "rpi4"                # see experiments.device_profiles.PROFILES
    battery = 1.0                  # start level of the simulated battery
    devices = 1                    # emulated devices, each with its own link
    images = 200                   # images per device, the same for every policy, from
                                   # the eval images in a fixed random order
    rate_hz = 10                   # arrivals per second per device
    deadline_ms = 200              # latency deadline (misses are counted)
    accuracy_floor = 0.0           # 0 = full model accuracy − 1 point, from the card
    policies = ["adaptive", "local", "local-exit", "offload-input", "neurosurgeon",
                "edgent", "fixed", "oracle-replay"]   # run in a seeded random order;
                                                      # oracle-replay last
    link = "userspace"             # or "kernel" (network namespaces + tc; root only)
    repetitions = 1                # runs at successive trace offsets; the summary gives
                                   # means and 95 % intervals over them
    lanes = 1                      # policies run this many at a time, each lane with its
                                   # own edge server and link (the grid uses 2)
    busy = [5.0, 12.0, 0.5]        # optional: a competing load takes half the device's
                                   # CPU from 5 s to 12 s into the run

The grid is generated in code (:func:`grid`), not written out point by point.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from device_client.planner import POLICIES
from experiments.device_profiles import PROFILES
from experiments.oracle import REPLAY_POLICY
from experiments.traces import resolve_trace
from splitnet.settings import SettingsError, from_table

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"


class ScenarioError(SettingsError):
    """A scenario file or option that cannot run."""


@dataclass(frozen=True)
class Scenario:
    name: str = "adhoc"
    trace: str = "ATT-LTE-driving.up"
    scale: float = 1.0
    trace_start_s: float = 0.0
    rtt_ms: float = 40.0
    loss: float = 0.0
    device: str = "rpi4"
    battery: float = 1.0
    devices: int = 1
    images: int = 200
    rate_hz: float = 10.0
    deadline_ms: float = 200.0
    accuracy_floor: float = 0.0
    policies: tuple[str, ...] = field(default=(*POLICIES, REPLAY_POLICY))
    link: str = "userspace"
    fixed_config: str = ""  # "" = the planner's default BottleFit-style config
    seed: int = 0
    repetitions: int = 1
    busy: tuple[float, float, float] | None = None  # (start s, end s, CPU share taken)
    lanes: int = 1  # policies at a time, each lane with its own edge server
    first_image: int = 0  # where in the shuffled eval images device 0 starts

    def __post_init__(self) -> None:
        problems = []
        try:
            resolve_trace(self.trace)
        except ValueError as error:
            problems.append(str(error))
        if self.device not in PROFILES:
            problems.append(f"unknown device {self.device!r}; use one of {sorted(PROFILES)}")
        unknown = [p for p in self.policies if p not in (*POLICIES, REPLAY_POLICY)]
        if unknown:
            problems.append(f"unknown policies {unknown}; use {[*POLICIES, REPLAY_POLICY]}")
        if self.link not in ("userspace", "kernel"):
            problems.append(f"link must be 'userspace' or 'kernel', not {self.link!r}")
        for name, value, low, high in (("scale", self.scale, 1e-4, 100),
                                       ("rtt_ms", self.rtt_ms, 0, 10_000),
                                       ("loss", self.loss, 0, 0.5),
                                       ("battery", self.battery, 0, 1),
                                       ("devices", self.devices, 1, 16),
                                       ("images", self.images, 1, 10_000),
                                       ("repetitions", self.repetitions, 1, 20),
                                       ("lanes", self.lanes, 1, 4),
                                       ("rate_hz", self.rate_hz, 0.01, 1000)):
            if not low <= value <= high:
                problems.append(f"{name} = {value} is outside [{low}, {high}]")
        if self.link == "kernel" and self.lanes != 1:
            problems.append("the kernel link runs one policy at a time; set lanes = 1")
        if self.busy is not None:
            start_s, end_s, share = self.busy
            if not (0 <= start_s < end_s and 0 < share < 1):
                problems.append(f"busy = {list(self.busy)} must be [start_s, end_s, share] "
                                "with start_s < end_s and 0 < share < 1")
        if problems:
            raise ScenarioError("; ".join(problems))

    @property
    def one_way_delay_ms(self) -> float:
        return self.rtt_ms / 2

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["policies"] = list(self.policies)
        return out

    def repetition(self, index: int) -> Scenario:
        """Run ``index`` (0-based) of this scenario: later in the trace by a run's length
        plus 6 s each time, on the next images, with its own seed."""
        stride_s = math.ceil(self.images / self.rate_hz) + 6
        return replace(self, name=f"{self.name}-rep{index + 1}", repetitions=1,
                       trace_start_s=self.trace_start_s + index * stride_s,
                       first_image=self.first_image + index * self.images * self.devices,
                       seed=self.seed + index)

    def with_options(self, **options: Any) -> Scenario:
        """The same scenario with some options replaced (None values are ignored)."""
        given = {k: v for k, v in options.items() if v is not None}
        for key in ("policies", "busy"):
            if key in given:
                given[key] = tuple(given[key])
        return replace(self, **given)


def load_scenario(path_or_name: str | Path) -> Scenario:
    """A scenario from a TOML file, or by name from experiments/scenarios/."""
    path = Path(path_or_name)
    if not path.is_file():
        path = SCENARIO_DIR / f"{path_or_name}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))
        raise ScenarioError(f"scenario {path_or_name} not found; give a .toml path or one "
                            f"of {known}")
    return parse_scenario(path.read_text(), path.stem, str(path))


def parse_scenario(text: str, name: str, where: str = "scenario") -> Scenario:
    """A scenario from TOML text (its ``[scenario]`` table); ``name`` when it has none.
    Raises ScenarioError, naming ``where``, for anything that cannot run."""
    try:
        data = tomllib.loads(text).get("scenario", {})
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(f"{where}: {error}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}: 'scenario' must be a table")
    data.setdefault("name", name)
    try:
        return from_table(Scenario, data, where)
    except SettingsError as error:
        raise ScenarioError(str(error)) from None
