"""systemd's service notifications: ready, stopping, and a watchdog fed only on progress.

    $NOTIFY_SOCKET (set by systemd for Type=notify) ◄── "READY=1" after the warm-up
                                                   ◄── "WATCHDOG=1" every WatchdogSec / 3,
                                                       while the pipeline's stages beat
                                                   ◄── "STOPPING=1" on SIGTERM

With ``WatchdogSec=`` in the unit, systemd restarts a service that stops sending
``WATCHDOG=1`` for that long. The feeder sends it only while every stage of the pipeline
has beaten within half the interval, so a service that hangs while it looks alive (its
threads blocked, nothing answered) is restarted. Outside systemd (no ``$NOTIFY_SOCKET``)
every call is a no-op. The protocol is one datagram per message on a Unix socket
(sd_notify(3)); no library is needed for it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable


def notify(message: str) -> bool:
    """Send one sd_notify message; False when not run by systemd (or it cannot be sent)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError:
        return False


def watchdog_interval_s() -> float | None:
    """systemd's watchdog interval for this process (``WatchdogSec=``), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1e6
    except ValueError:
        return None


class WatchdogFeeder:
    """Sends WATCHDOG=1 every interval / 3 while ``last_progress()`` (monotonic seconds)
    is within half the interval of now."""

    def __init__(self, interval_s: float, last_progress: Callable[[], float]) -> None:
        self.interval_s = interval_s
        self.last_progress = last_progress
        self.sent = 0
        self.withheld = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s / 3):
            if time.monotonic() - self.last_progress() <= self.interval_s / 2:
                notify("WATCHDOG=1")
                self.sent += 1
            else:
                self.withheld += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
