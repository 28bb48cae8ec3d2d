"""Emulated devices: a CPU quota (cgroup) calibrated so this host runs like the device.

    calibration anchor: PyTorch's Raspberry Pi 4 tutorial runs MobileNetV2 at 224x224
    at about 30 fps on the Pi's CPU. We build the same MobileNetV2 (torchvision's layer
    table, from splitnet's own inverted residual blocks), time it here on one thread,
    and set the quota so that it would run at the profile's frame rate:

        quota (fraction of one core) = host_ms(MobileNetV2) / (1000 / profile_fps)

    cgroup v2: <group>/cpu.max = "quota period";  cgroup v1: cpu.cfs_quota_us/cfs_period_us.
    Where neither can be written, the fallback is explicit: the device process sleeps after
    each model call for (1/quota − 1) times the call's duration, and the result says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from device_client.energy import RPI4, PowerProfile

CGROUP_ROOT = Path("/sys/fs/cgroup")
CFS_PERIOD_US = 10_000  # a short period keeps throttling smooth at inference time scales
CALIBRATION_FILE = Path("runs/calibration.json")


@dataclass(frozen=True)
class DeviceProfile:
    """A device to emulate: its speed relative to the anchor and its power draw."""

    name: str
    mobilenet_v2_fps: float  # MobileNetV2-224 frames per second on this device's CPU
    power: PowerProfile
    description: str


PROFILES = {
    "rpi4": DeviceProfile(
        "rpi4", 30.0, RPI4,
        "Raspberry Pi 4 Model B: ~30 fps MobileNetV2-224 (PyTorch's Raspberry Pi tutorial); "
        "2.7 W idle, 6.4 W loaded"),
    "rpi3": DeviceProfile(
        "rpi3", 10.0, PowerProfile(name="rpi3", idle_w=1.9, busy_w=5.1),
        "Raspberry Pi 3 Model B+: assumed 3x slower than the Pi 4 on this workload "
        "(Cortex-A53 at 1.4 GHz vs Cortex-A72 at 1.5 GHz); 1.9 W idle, 5.1 W loaded"),
    "pizero2": DeviceProfile(
        "pizero2", 5.0, PowerProfile(name="pizero2", idle_w=0.6, busy_w=3.0),
        "Raspberry Pi Zero 2 W: assumed 6x slower than the Pi 4; 0.6 W idle, 3.0 W loaded"),
}


def mobilenet_v2_224_ms(repeats: int = 15) -> float:
    """Median ms of one MobileNetV2-224 forward pass here, one thread, batch 1."""
    import torch
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
    net = nn.Sequential(*layers).eval()
    x = torch.rand(1, 3, 224, 224)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for _ in range(3):
                net(x)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                net(x)
                times.append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(times)


@dataclass(frozen=True)
class Calibration:
    host_mobilenet_v2_ms: float
    profile: str
    target_ms: float
    quota: float  # fraction of one core; 1.0 = unthrottled


def calibrate(profile: DeviceProfile, cache: Path = CALIBRATION_FILE) -> Calibration:
    """The CPU quota that makes this host run like ``profile`` (cached per host)."""
    host_ms = None
    if cache.is_file():
        host_ms = json.loads(cache.read_text()).get("host_mobilenet_v2_ms")
    if host_ms is None:
        host_ms = mobilenet_v2_224_ms()
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"host_mobilenet_v2_ms": host_ms}))
    target_ms = 1000 / profile.mobilenet_v2_fps
    return Calibration(host_ms, profile.name, target_ms, min(host_ms / target_ms, 1.0))


class CpuQuota:
    """A cgroup limiting one process to ``quota`` of a core, removed on close."""

    def __init__(self, name: str, quota: float) -> None:
        self.name = name
        self.quota = quota
        self.path: Path | None = None
        self.version = 0
        self.error = ""
        self._create()

    def _create(self) -> None:
        quota_us = max(int(self.quota * CFS_PERIOD_US), 1000)
        v2 = CGROUP_ROOT / "cgroup.controllers"
        try:
            if v2.is_file() and "cpu" in v2.read_text():
                path = CGROUP_ROOT / self.name
                path.mkdir(exist_ok=True)
                (path / "cpu.max").write_text(f"{quota_us} {CFS_PERIOD_US}")
                self.path, self.version = path, 2
                return
            v1 = CGROUP_ROOT / "cpu"
            if (v1 / "cpu.cfs_quota_us").is_file():
                path = v1 / self.name
                path.mkdir(exist_ok=True)
                (path / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
                (path / "cpu.cfs_quota_us").write_text(str(quota_us))
                self.path, self.version = path, 1
                return
            self.error = "no writable cgroup cpu controller"
        except OSError as error:
            self.error = f"cannot create a cgroup: {error}"

    @property
    def available(self) -> bool:
        return self.path is not None

    def prefix(self) -> list[str]:
        """A command prefix that moves the process into the cgroup before it starts."""
        assert self.path is not None
        procs = self.path / "cgroup.procs"
        return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "cpu-quota"]

    def close(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):  # still has a process: the caller kills it
                os.rmdir(self.path)


def describe(profile: DeviceProfile, calibration: Calibration, quota: CpuQuota | None) -> dict:
    """What the result reports about device emulation."""
    method = (f"cgroup v{quota.version} cpu quota" if quota and quota.available
              else f"sleep-scaling fallback ({quota.error if quota else 'quota disabled'})")
    if calibration.quota >= 1.0:
        method = "unthrottled: this host is slower than the profile"
    return {"profile": asdict(profile) | {"power": asdict(profile.power)},
            "calibration": asdict(calibration), "method": method}
