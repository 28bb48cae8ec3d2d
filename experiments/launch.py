"""Start ``python -m edge_server`` as a child process and learn the port it bound.

    start_edge_process(checkpoint, host) ─► Popen(python -m edge_server --address host:0)
                                         ─► reads its output up to "serving <model ids> on port
                                            N" ─► (process, N); a thread reads (and
                                            drops) its later output, so that a full pipe
                                            never blocks the server

Binding port 0 and reading the answer avoids the race of picking a free port first.
Used by the benchmarks and the experiment runner.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path


def start_edge_process(checkpoint: Path, host: str = "127.0.0.1", port: int = 0,
                       args: tuple[str, ...] = (), prefix: tuple[str, ...] = (),
                       env: dict[str, str] | None = None
                       ) -> tuple[subprocess.Popen[str], int]:
    """A running edge server process and its port; raises RuntimeError if it fails.
    ``env`` adds to this process's environment (a fault plan, say)."""
    process = subprocess.Popen(
        [*prefix, sys.executable, "-m", "edge_server", "--address", f"{host}:{port}",
         "--checkpoint", str(checkpoint), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=None if env is None else {**os.environ, **env})
    seen = ""  # log lines before it (the edge precision chosen, for one), for the error
    for line in process.stdout or ():
        match = re.search(r"serving .+ on port (\d+)", line)
        if match is not None:
            threading.Thread(target=_drain, args=(process.stdout,), daemon=True).start()
            return process, int(match.group(1))
        seen += line
    process.kill()
    raise RuntimeError(f"edge server did not start: {seen.strip()[-2000:]}")


def device_tokens(names: Iterable[str], folder: Path) -> tuple[Path, dict[str, str]]:
    """A token per device for an edge on this machine (``--token-file``): on loopback
    every device has the same address, and the edge keys each one's share of its queue on
    what it authenticated. Returns the file and {device name: its token}."""
    tokens = {name: secrets.token_hex(16) for name in names}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "device-tokens"
    path.write_text("".join(f"{name} {token}\n" for name, token in tokens.items()))
    path.chmod(0o600)
    return path, tokens


def _drain(stream: Iterable[str]) -> None:
    for _ in stream:
        pass


def stop_edge_process(process: subprocess.Popen[str], timeout_s: float = 15.0) -> None:
    """SIGTERM (in-flight requests finish), then SIGKILL if it does not exit in time."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
