"""Camera stills through the device: large photos are answered, a huge one is refused.

    an Imagenette photo, upscaled ─► a folder: 12 MP JPEG, 24 MP JPEG, 12 MP PNG,
                                     100 MP JPEG, then a 224 px JPEG after it
    edge server (camera model) ◄── python -m device_client --images FOLDER --records ...
    ─► per file: answered (class, where) or refused (the device's message); the device
       process's peak RSS (its rusage) and wall time

Usage: ``python -m experiments.bench.stills --json``. Needs Imagenette.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from experiments.launch import start_edge_process, stop_edge_process
from splitnet.data.imagenette import find_imagenette, list_image_folder
from splitnet.provenance import RESULTS_DIR, command_line, save_report, start_results
from splitnet.zoo import DEFAULT_MODEL, checkpoint_for

# (file name, megapixels, format); names sort in this order, the way the device reads them
STILLS = (("1-12mp.jpg", 12, "JPEG"), ("2-24mp.jpg", 24, "JPEG"), ("3-12mp.png", 12, "PNG"),
          ("4-100mp.jpg", 100, "JPEG"), ("5-after.jpg", 0, "JPEG"))


def make_stills(folder: Path) -> list[Path]:
    """The stills, from the first Imagenette val photo scaled to each size (4:3)."""
    source = Image.open(list_image_folder(find_imagenette() / "val")[0][0][0]).convert("RGB")
    paths = []
    for name, megapixels, fmt in STILLS:
        if megapixels:
            width = int((megapixels * 1e6 * 4 / 3) ** 0.5)
            image = source.resize((width, width * 3 // 4), Image.Resampling.BILINEAR)
        else:
            image = source
        path = folder / name
        image.save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 1}))
        paths.append(path)
    return paths


def run(folder: Path) -> dict[str, Any]:
    """The device CLI over the folder against a local edge; what became of each file."""
    paths = make_stills(folder)
    process, port = start_edge_process(checkpoint_for(DEFAULT_MODEL))
    records = folder / "records.jsonl"
    try:
        started = time.monotonic()
        device = subprocess.run(
            [sys.executable, "-m", "device_client", "--edge", f"127.0.0.1:{port}",
             "--images", str(folder), "--records", str(records), "--json"],
            capture_output=True, text=True, timeout=600, env={**os.environ, "TQDM_DISABLE": "1"})
        wall_s = time.monotonic() - started
    finally:
        stop_edge_process(process)
    answered = {Path(r["file"]).name: r for r in map(json.loads, records.read_text().splitlines())}
    files = {}
    for path in paths:
        record = answered.get(path.name)
        files[path.name] = {"bytes": path.stat().st_size,
                            "answered": record is not None,
                            "class": record["class_name"] if record else None,
                            "where": record["where"] if record else None}
    refusals = [line for line in device.stderr.splitlines() if line.startswith("skipped:")]
    return {"exit_code": device.returncode, "files": files, "refusals": refusals,
            "device_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "device_wall_s": wall_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.bench.stills",
        description="Large camera stills (12 and 24 MP JPEG, 12 MP PNG) through the device "
                    "client and a local edge, then a 100 MP JPEG that must be refused with a "
                    "clear error, and a small photo after it that must still be answered. "
                    "Reports each file's fate and the device's peak RSS.")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "stills",
                        help="results folder (default: %(default)s)")
    args = parser.parse_args(argv)
    meta = start_results(args.out, command_line("experiments.bench.stills", argv))
    with tempfile.TemporaryDirectory() as tmp:
        result = run(Path(tmp))
    files = result["files"]
    result["met"] = (all(files[n]["answered"] for n, mp, _ in STILLS if mp != 100)
                     and not files["4-100mp.jpg"]["answered"] and bool(result["refusals"]))
    save_report(args.out, meta, result)
    print(json.dumps(result, indent=1) if args.json else
          "\n".join(f"{name}: {'answered ' + str(f['class']) if f['answered'] else 'refused'}"
                    for name, f in files.items())
          + f"\npeak device RSS {result['device_peak_rss_mb']:.0f} MB; "
            f"refusals: {result['refusals']}")
    return 0 if result["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
