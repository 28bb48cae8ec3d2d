"""Where the battery level comes from: Linux sysfs, a simulated battery, or a fixed level.

    "auto"   ──► /sys/class/power_supply/*/capacity if a battery exists, else simulated
    "sysfs"  ──► the first power_supply of type Battery (error if none)
    "sim" / "sim:0.6" ──► SimulatedBattery starting at 60 %, drained by the energy model
    "0.3"    ──► FixedBattery at 30 %
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

POWER_SUPPLY = Path("/sys/class/power_supply")
# 5,000 mAh at 3.7 V: a typical USB power bank or Pi UPS HAT.
DEFAULT_CAPACITY_MJ = 5.0 * 3.7 * 3600 * 1000


class Battery(Protocol):
    """A battery the planner can read and the energy model can drain."""

    kind: str

    def level(self) -> float:
        """State of charge in [0, 1]."""
        ...

    def drain(self, energy_mj: float) -> None:
        """Account for energy spent (only simulated batteries change)."""
        ...


class FixedBattery:
    kind = "fixed"

    def __init__(self, level: float) -> None:
        if not 0.0 <= level <= 1.0:
            raise ValueError(f"battery level must be in [0, 1], got {level}")
        self._level = level

    def level(self) -> float:
        return self._level

    def drain(self, energy_mj: float) -> None:
        pass


class SimulatedBattery:
    kind = "simulated"

    def __init__(self, start_level: float = 1.0,
                 capacity_mj: float = DEFAULT_CAPACITY_MJ) -> None:
        if not 0.0 <= start_level <= 1.0:
            raise ValueError(f"battery level must be in [0, 1], got {start_level}")
        self.capacity_mj = capacity_mj
        self._remaining_mj = start_level * capacity_mj
        self._lock = threading.Lock()

    def level(self) -> float:
        return max(self._remaining_mj, 0.0) / self.capacity_mj

    def drain(self, energy_mj: float) -> None:
        with self._lock:
            self._remaining_mj -= max(energy_mj, 0.0)


class SysfsBattery:
    kind = "sysfs"

    def __init__(self, capacity_file: Path) -> None:
        self.capacity_file = capacity_file

    def level(self) -> float:
        try:
            return int(self.capacity_file.read_text().strip()) / 100
        except (OSError, ValueError):
            return 1.0

    def drain(self, energy_mj: float) -> None:
        pass


def find_sysfs_battery(root: Path = POWER_SUPPLY) -> SysfsBattery | None:
    """The first power supply of type Battery that reports a capacity."""
    if not root.is_dir():
        return None
    for supply in sorted(root.iterdir()):
        kind = supply / "type"
        capacity = supply / "capacity"
        try:
            if kind.read_text().strip() == "Battery" and capacity.is_file():
                return SysfsBattery(capacity)
        except OSError:
            continue
    return None


def make_battery(spec: str = "auto") -> Battery:
    """Build a battery from a command-line spec (see the module docstring)."""
    if spec == "auto":
        return find_sysfs_battery() or SimulatedBattery()
    if spec == "sysfs":
        found = find_sysfs_battery()
        if found is None:
            raise ValueError(f"no battery under {POWER_SUPPLY}; use --battery sim or a level")
        return found
    if spec.startswith("sim"):
        start = spec.partition(":")[2]
        return SimulatedBattery(float(start) if start else 1.0)
    try:
        return FixedBattery(float(spec))
    except ValueError:
        raise ValueError(f"unknown battery {spec!r}; use auto, sysfs, sim[:LEVEL] or a level "
                         "in [0, 1]") from None
