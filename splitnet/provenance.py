"""Results as artifacts: every benchmark and experiment writes a folder that says where its
figures came from.

    results/<name>/meta.json   the commit (and whether the tree had changes), the host's CPU
                               model and flags, the exact command, Python and torch, the
                               start and end time
    results/<name>/...         the raw JSON, the records, tables and plots of the run

A figure quoted in the README or docs names its folder, and the folder is committed with
the text that quotes it (``tests/test_docs.py`` fails when a quoted folder is missing).
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path("results")
_FLAGS_OF_NOTE = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
                  "neon", "asimd")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                             check=True, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def host() -> dict[str, Any]:
    """This machine's CPU model, core count and the instruction-set flags that change how
    fast the models run (AVX-512, VNNI, AMX, NEON)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags.update(value.split())
    except OSError:
        pass
    import os

    return {"cpu": model, "cores": os.cpu_count(), "machine": platform.machine(),
            "flags": sorted(f for f in _FLAGS_OF_NOTE if f in flags)}


def start_results(folder: Path, command: list[str] | None = None) -> dict[str, Any]:
    """Create ``folder`` and write its meta.json for a run starting now; returns the meta
    (``finish_results`` adds the end time)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    meta = {"command": " ".join(command or ["python", *sys.argv]),
            "commit": _git("rev-parse", "HEAD"),
            "tree_changed": bool(_git("status", "--porcelain", "--untracked-files=no")),
            "host": host(), "python": platform.python_version(), "torch": torch.__version__,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def finish_results(folder: Path, meta: dict[str, Any], **extra: Any) -> None:
    """Record the end time (and ``extra``) in ``folder``'s meta.json."""
    meta = meta | extra | {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def save_report(folder: Path, meta: dict[str, Any], report: dict[str, Any],
                name: str = "report.json") -> None:
    """Write a benchmark's JSON report into its results folder and close the folder's
    meta.json (a benchmark: ``meta = start_results(...)``, run, ``save_report(...)``)."""
    (folder / name).write_text(json.dumps(report, indent=1, default=str) + "\n")
    finish_results(folder, meta)


def command_line(module: str, argv: list[str] | None) -> list[str]:
    """The command as a user types it: ``python -m <module> <arguments>``."""
    return ["python", "-m", module, *(sys.argv[1:] if argv is None else argv)]
