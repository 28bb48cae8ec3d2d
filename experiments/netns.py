"""Kernel link emulation: two network namespaces joined by a veth pair, shaped by tc.

    device netns (10.213.<k>.1) ══ veth ══ edge netns (10.213.<k>.2)
      root qdisc on the device side: tbf, rate re-set from the trace every interval
      (+ netem delay where the kernel has netem; this machine's kernel has none, and
       ``not_emulated`` then says the one-way delay is missing)

Real TCP through the kernel. Needs root and ``ip``/``tc``. The namespaces and links are
always removed: on ``stop()``, at interpreter exit, and on SIGTERM/SIGINT; ``cleanup_stale``
removes any left by a process that was killed outright.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import FrameType

from experiments.traces import Trace

PREFIX = "spn"
NETNS_DIR = Path("/run/netns")
MIN_RATE_BPS = 8_000  # tbf cannot be set to zero; an outage is emulated as 8 kbit/s


class KernelLinkUnavailableError(RuntimeError):
    """This machine cannot run the kernel link (not root, no ip/tc, no netns)."""


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=check)


def kernel_link_problem() -> str | None:
    """Why the kernel link cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed (Debian: iproute2)"
    probe = f"{PREFIX}probe{os.getpid()}"
    result = _run("ip", "netns", "add", probe, check=False)
    if result.returncode != 0:
        return f"cannot create a network namespace: {result.stderr.strip()}"
    _run("ip", "netns", "del", probe, check=False)
    return None


def cleanup_stale() -> list[str]:
    """Remove namespaces this module made in processes that no longer exist."""
    removed: list[str] = []
    if not NETNS_DIR.is_dir():
        return removed
    for entry in NETNS_DIR.iterdir():
        name = entry.name
        if not name.startswith(PREFIX) or "-" not in name:
            continue
        try:
            pid = int(name[len(PREFIX):].split("-")[0])
        except ValueError:
            continue
        if not Path(f"/proc/{pid}").exists():
            _run("ip", "netns", "del", name, check=False)
            removed.append(name)
    return removed


class KernelLink:
    """Device and edge namespaces, a veth pair, and a trace-driven tbf on the uplink."""

    mode = "kernel"

    def __init__(self, trace: Trace, one_way_delay_ms: float = 10.0, index: int = 0,
                 start_offset_s: float = 0.0, update_interval_s: float = 0.1) -> None:
        problem = kernel_link_problem()
        if problem:
            raise KernelLinkUnavailableError(f"kernel link unavailable: {problem}; use the "
                                        "userspace link")
        self.trace = trace
        self.one_way_delay_ms = one_way_delay_ms
        self.offset_ms = start_offset_s * 1000
        self.interval_s = update_interval_s
        tag = f"{PREFIX}{os.getpid()}-{index}"
        self.device_ns, self.edge_ns = f"{tag}d", f"{tag}e"
        self.device_if, self.edge_if = f"{PREFIX}{index}d{os.getpid() % 10000}", \
            f"{PREFIX}{index}e{os.getpid() % 10000}"
        self.device_ip, self.edge_ip = f"10.213.{index}.1", f"10.213.{index}.2"
        self.not_emulated: list[str] = []
        self.started_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._up = False
        self._tbf_parent: tuple[str, ...] = ("root", "handle", "10:")

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> KernelLink:
        cleanup_stale()
        atexit.register(self.stop)
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)

            def handler(signum: int, frame: FrameType | None, previous: object = previous) -> None:
                self.stop()
                if callable(previous):
                    previous(signum, frame)
                else:
                    raise SystemExit(128 + signum)

            if threading.current_thread() is threading.main_thread():
                signal.signal(sig, handler)
        try:
            self._create()
        except Exception:
            self.stop()
            raise
        self.started_at = time.monotonic()
        self._thread = threading.Thread(target=self._follow_trace, name="tbf", daemon=True)
        self._thread.start()
        return self

    def _create(self) -> None:
        self._up = True
        for ns in (self.device_ns, self.edge_ns):
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "link", "add", self.device_if, "type", "veth", "peer", "name", self.edge_if)
        _run("ip", "link", "set", self.device_if, "netns", self.device_ns)
        _run("ip", "link", "set", self.edge_if, "netns", self.edge_ns)
        for ns, dev, ip in ((self.device_ns, self.device_if, self.device_ip),
                            (self.edge_ns, self.edge_if, self.edge_ip)):
            _run("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
        # delay first (netem), tbf under it; without netem, tbf alone at the root
        netem = _run("tc", "-n", self.device_ns, "qdisc", "add", "dev", self.device_if,
                     "root", "handle", "1:", "netem", "delay",
                     f"{self.one_way_delay_ms}ms", check=False)
        if netem.returncode == 0:
            self._tbf_parent = ("parent", "1:1", "handle", "10:")
            for ns, dev in ((self.edge_ns, self.edge_if),):
                _run("tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "netem", "delay",
                     f"{self.one_way_delay_ms}ms")
        else:
            self._tbf_parent = ("root", "handle", "10:")
            self.not_emulated.append(
                f"one-way delay of {self.one_way_delay_ms:g} ms in each direction (the kernel "
                f"has no netem: {netem.stderr.strip() or 'qdisc unavailable'}); RTT is the "
                "veth's own, well under 1 ms")
        self._set_rate(self.trace.mean_bps(), add=True)

    def _set_rate(self, rate_bps: float, add: bool = False) -> None:
        rate = max(int(rate_bps), MIN_RATE_BPS)
        burst = max(rate // 8 // 50, 3000)  # about 20 ms of data, at least two packets
        _run("tc", "-n", self.device_ns, "qdisc", "add" if add else "change", "dev",
             self.device_if, *self._tbf_parent, "tbf", "rate", f"{rate}bit",
             "burst", str(burst), "latency", "400ms")

    def _follow_trace(self) -> None:
        while not self._stop.wait(self.interval_s):
            now_ms = self.trace_time_ms(time.monotonic())
            rate = self.trace.capacity_bps(now_ms, now_ms + self.interval_s * 1000)
            try:
                self._set_rate(rate)
            except subprocess.CalledProcessError:
                return  # the link is being torn down

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._up:
            for ns in (self.device_ns, self.edge_ns):
                _run("ip", "netns", "del", ns, check=False)
            self._up = False

    def __enter__(self) -> KernelLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- the link interface
    def exec_prefix(self, side: str) -> list[str]:
        """Run a command inside the device or edge namespace."""
        return ["ip", "netns", "exec", self.device_ns if side == "device" else self.edge_ns]

    def trace_time_ms(self, monotonic_s: float) -> float:
        return (monotonic_s - self.started_at) * 1000 + self.offset_ms

    def capacity_bps(self, start_s: float, end_s: float) -> float:
        return self.trace.capacity_bps(self.trace_time_ms(start_s), self.trace_time_ms(end_s))

    def _counter(self, name: str) -> int:
        result = _run("ip", "netns", "exec", self.device_ns, "cat",
                      f"/sys/class/net/{self.device_if}/statistics/{name}", check=False)
        return int(result.stdout.strip() or 0)

    @property
    def bytes_up(self) -> int:
        """Bytes the device sent, as the kernel counts them (IP and TCP headers included)."""
        return self._counter("tx_bytes")

    @property
    def bytes_down(self) -> int:
        return self._counter("rx_bytes")
