"""``python -m experiments``: replay real uplink traces against emulated devices and compare
every policy side by side. See ``python -m experiments --help``.

    run      one scenario (experiments.studies.run_repeated)
    grid     every held-out cell, both models (experiments.grid)
    stream   a camera's frame stream through each policy (experiments.studies.run_streams)
    battery  the adaptive policy at full and low charge (experiments.studies.run_battery)

Every command writes a results folder (splitnet.provenance): meta.json, the summaries and
the records.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from experiments.calibration import host_times
from experiments.device_profiles import PROFILES
from experiments.grid import GRID_IMAGES, GRID_LANES, GRID_REPETITIONS, run_grid
from experiments.netns import KernelLinkUnavailableError
from experiments.runner import StoppedError, stop_on_signals
from experiments.scenario import Scenario, ScenarioError, load_scenario
from experiments.studies import json_view, run_battery, run_repeated, run_streams
from experiments.traces import TraceError
from splitnet.checkpoint import CheckpointError
from splitnet.provenance import RESULTS_DIR, command_line, finish_results, start_results
from splitnet.zoo import DEFAULT_MODEL, SMALL_MODEL, checkpoint_for, list_zoo

SCENARIO_OPTIONS = ("trace", "scale", "trace_start_s", "rtt_ms", "loss", "device", "images",
                    "devices", "rate_hz", "battery", "deadline_ms", "policies", "link",
                    "repetitions", "busy", "lanes")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=list_zoo(),
                        help="which zoo model the devices and the edge run (default: "
                             "%(default)s, the camera model)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a checkpoint file instead of the zoo's --model")


def add_scenario_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scenario options (override the scenario file)")
    group.add_argument("--trace", help="trace name in ../shared/traces or a Mahimahi file")
    group.add_argument("--scale", type=float, help="trace scale, e.g. 0.05 for IoT uplinks")
    group.add_argument("--trace-start-s", type=float, help="where in the trace to start")
    group.add_argument("--rtt-ms", type=float, help="fixed round-trip time")
    group.add_argument("--loss", type=float, help="per-packet loss probability")
    group.add_argument("--device", choices=sorted(PROFILES), help="device profile")
    group.add_argument("--n", type=int, dest="images", help="images per device")
    group.add_argument("--devices", type=int, help="number of emulated devices")
    group.add_argument("--rate-hz", type=float, help="arrivals per second per device")
    group.add_argument("--battery", type=float, help="start battery level in [0, 1]")
    group.add_argument("--deadline-ms", type=float, help="latency deadline")
    group.add_argument("--policies", type=lambda s: tuple(s.split(",")),
                       help="comma-separated, e.g. adaptive,local")
    group.add_argument("--link", choices=("userspace", "kernel"), help="link emulation mode")
    group.add_argument("--busy", type=float, nargs=3, metavar=("START_S", "END_S", "SHARE"),
                       help="a competing load takes SHARE of the device's CPU in that window")
    group.add_argument("--lanes", type=int,
                       help="policies run at a time, each with its own edge server and "
                            "link (1: one after another)")
    group.add_argument("--repetitions", type=int,
                       help="runs at successive trace offsets (means ± 95 %% over them)")


def main(argv: list[str] | None = None) -> int:
    """Long because: one declarative list of the commands and their options, each with its
    help."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments",
        description="Replay real cellular uplink traces against emulated Raspberry Pis and "
                    "compare splitnet's adaptive policy with local-only, full offload, "
                    "Neurosurgeon, Edgent and a fixed BottleFit-style bottleneck, side by side.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n"
               "  python -m experiments run                         # the default scenario\n"
               "  python -m experiments run --trace Verizon-LTE-short.up --scale 0.05 \\\n"
               "      --rtt-ms 60 --device pizero2 --n 100\n"
               "  python -m experiments run my_scenario.toml --json\n"
               "  python -m experiments grid                        # every held-out cell, "
               "both models\n"
               "  python -m experiments battery                     # full and 30 % charge\n"
               "  python -m experiments stream --fps 15             # a camera's frames, "
               "pipelined")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one scenario",
                         description="Run one scenario: a TOML file, a name from "
                                     "experiments/scenarios/, or 'default'; options override it.")
    run.add_argument("scenario", nargs="?", default="default")
    add_scenario_options(run)
    run.add_argument("--out", type=Path, default=None,
                     help="results folder (default: results/run-SCENARIO)")
    run.add_argument("--json", action="store_true", help="print one JSON object")
    add_model_options(run)
    grid_parser = sub.add_parser(
        "grid", help="run the comparison grid",
        description="The camera model over 4 shipped traces, each from an offset no "
                    "constant or scenario was chosen on (held out), x 2 device profiles "
                    "(rpi4, pizero2) x 2 edge RTTs (10 ms, 40 ms); the small model on one "
                    "cell per trace. Every policy in each cell, both variants of each "
                    f"peer, {GRID_REPETITIONS} paired runs of {GRID_IMAGES} camera frames "
                    "at 10 a second per cell at successive offsets, several policies at a "
                    "time (each with its own edge server: "
                    + ", ".join(f"{n} on {d}" for d, n in GRID_LANES.items()) + "). "
                    "Reports response times from arrival, paired ratios with 95 % "
                    "intervals, the per-frame bound, and the grid's targets.")
    grid_parser.set_defaults(images=GRID_IMAGES, repetitions=GRID_REPETITIONS)
    grid_parser.add_argument("scenario", nargs="?", default="default",
                             help="base scenario whose other settings every cell shares")
    add_scenario_options(grid_parser)
    grid_parser.add_argument("--out", type=Path, default=RESULTS_DIR / "grid",
                             help="results folder (default: %(default)s)")
    grid_parser.add_argument("--json", action="store_true")
    grid_parser.add_argument("--models", type=lambda s: s.split(","), default=None,
                             help=f"comma-separated zoo models (default: {DEFAULT_MODEL},"
                                  f"{SMALL_MODEL})")
    grid_parser.add_argument("--cells", type=lambda s: s.split(","), default=None,
                             metavar="PATTERNS",
                             help="run only the cells whose name holds one of these "
                                  "comma-separated strings, e.g. ATT-LTE-driving or "
                                  "pizero2-rtt10 (default: every cell)")
    stream_parser = sub.add_parser(
        "stream", help="a camera's frame stream through each policy",
        description="Each policy gets a camera's frames at a fixed rate (15 fps by default) "
                    "through the shaped link on an emulated device, pipelined (the head of "
                    "the next frame runs while the edge answers this one), the newest frame "
                    "winning: reports sustained fps, the drop rate and the latency from "
                    "capture (p50, p95) per policy. Scenario 'frame-stream' by default.")
    stream_parser.add_argument("scenario", nargs="?", default="frame-stream")
    add_scenario_options(stream_parser)
    stream_parser.add_argument("--fps", type=float, default=15.0,
                               help="the camera's frame rate (default: %(default)s)")
    stream_parser.add_argument("--seconds", type=float, default=20.0,
                               help="stream length per policy (default: %(default)s)")
    stream_parser.add_argument("--out", type=Path, default=None,
                               help="results folder (default: results/stream-SCENARIO)")
    stream_parser.add_argument("--json", action="store_true")
    add_model_options(stream_parser)
    battery_parser = sub.add_parser(
        "battery", help="the adaptive policy at full charge and at 30 %%, paired",
        description="Runs the adaptive policy on a scenario ('low-battery' by default) at "
                    "full charge and at a low one (--low, 0.3 by default), on the same frames "
                    "and stretch of trace in every repetition, and reports its energy and "
                    "response time per answered frame at the low charge over full charge, "
                    "with 95 %% intervals, and its accuracy at both.")
    battery_parser.add_argument("scenario", nargs="?", default="low-battery")
    add_scenario_options(battery_parser)
    battery_parser.add_argument("--low", type=float, default=0.3,
                                help="the low charge (default: %(default)s)")
    battery_parser.add_argument("--out", type=Path, default=None,
                                help="results folder (default: results/battery-SCENARIO)")
    add_model_options(battery_parser)
    args = parser.parse_args(argv)
    stop_on_signals()  # a stopped run takes its edge servers and device workers with it
    out_dir = args.out or (RESULTS_DIR / f"{args.command}-{args.scenario}"
                           if args.command != "grid" else RESULTS_DIR / "grid")
    args.out = out_dir
    meta = start_results(out_dir, command_line("experiments", argv))
    try:
        return _main(args, meta)
    finally:
        finish_results(out_dir, meta)


def _main(args: argparse.Namespace, meta: dict[str, Any]) -> int:
    try:
        base = load_scenario(args.scenario).with_options(
            **{k: getattr(args, k) for k in SCENARIO_OPTIONS})
        # this host's anchors before any device, edge or decoding runs: measured beside
        # them, the fp32 anchor's least CPU time came out 1.7x high (each run measures
        # them again, before its lanes start, and the least is kept)
        host_times()
        return COMMANDS[args.command](args, base)
    except (ScenarioError, TraceError, CheckpointError, FileNotFoundError,
            KernelLinkUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except StoppedError as stopped:
        print(f"{stopped}: its edge servers and device workers were stopped too; the "
              "records of the policies that finished are in the output folder",
              file=sys.stderr)
        return stopped.exit_code


def _checkpoint(args: argparse.Namespace) -> Path:
    return Path(args.checkpoint) if args.checkpoint else checkpoint_for(args.model)


def _run(args: argparse.Namespace, base: Scenario) -> int:
    summary = run_repeated(base, args.out, _checkpoint(args))
    if args.json:
        print(json.dumps(json_view(summary), indent=1))
    else:
        print((args.out / "summary.md").read_text())
        print("plots:", ", ".join(summary["plots"]))
    return 0


def _battery(args: argparse.Namespace, base: Scenario) -> int:
    print(json.dumps(run_battery(base, args.out, _checkpoint(args), (1.0, args.low)),
                     indent=1))
    return 0


def _stream(args: argparse.Namespace, base: Scenario) -> int:
    table = run_streams(base, args.out, _checkpoint(args), args.fps, args.seconds)
    print(json.dumps(table, indent=1) if args.json else (args.out / "summary.md").read_text())
    return 0


def _grid(args: argparse.Namespace, base: Scenario) -> int:
    result = run_grid(base, args.out, args.models, args.cells, args.lanes)
    print(json.dumps(result, indent=1) if args.json else
          (args.out / "grid.md").read_text() + json.dumps(
              {m: r["targets"] for m, r in result["models"].items()}
              | {"grid_minutes": result["grid_minutes"]}, indent=1))
    return 0


COMMANDS = {"run": _run, "battery": _battery, "stream": _stream, "grid": _grid}


if __name__ == "__main__":
    raise SystemExit(main())
