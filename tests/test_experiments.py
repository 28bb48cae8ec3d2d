"""Traces, both link modes, the oracle, and a short scenario end to end."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from device_client.energy import RPI4
from device_client.estimators import Estimates
from device_client.planner import Planner
from experiments.grid import grid
from experiments.link import UserspaceLink
from experiments.netns import KernelLink, kernel_link_problem
from experiments.oracle import oracle
from experiments.scenario import Scenario, ScenarioError, load_scenario
from experiments.traces import PACKET_BYTES, Trace, TraceError
from splitnet.config import Config, Placement


def test_shared_traces_match_their_published_rates():
    att = Trace.load("ATT-LTE-driving.up")
    assert att.mean_bps() / 1e6 == pytest.approx(0.83, abs=0.01)
    assert (att.per_second_mbps() == 0).sum() >= 90  # its outages
    assert Trace.load("TMobile-LTE-short.up").mean_bps() / 1e6 == pytest.approx(13.3, abs=0.1)


def test_scaling_keeps_every_kth_opportunity():
    base = Trace.load("Verizon-LTE-short.up")
    tenth = Trace.load("Verizon-LTE-short.up", scale=0.1)
    assert len(tenth.opportunities_ms) == len(base.opportunities_ms) // 10
    assert tenth.mean_bps() == pytest.approx(base.mean_bps() / 10, rel=0.01)
    assert tenth.period_ms == base.period_ms


def test_any_mahimahi_file_works_and_bad_ones_are_refused(tmp_path):
    path = tmp_path / "two.up"
    path.write_text("1\n1\n2\n")  # 3 packets every 2 ms, looping
    trace = Trace.load(path)
    assert trace.capacity_bps(0, 2000) == pytest.approx(3000 * PACKET_BYTES * 8 / 2)
    (tmp_path / "bad.up").write_text("one\n")
    with pytest.raises(TraceError):
        Trace.load(tmp_path / "bad.up")
    with pytest.raises(TraceError, match="not found"):
        Trace.load("no-such-trace.up")


def _sink() -> tuple[int, list[tuple[int, float]]]:
    """A TCP server on loopback: for each connection, (bytes received, when it ended)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    got: list[tuple[int, float]] = []

    def run() -> None:
        while True:
            conn, _ = server.accept()
            total = 0
            while data := conn.recv(65536):
                total += len(data)
            got.append((total, time.monotonic()))
            conn.close()

    threading.Thread(target=run, daemon=True).start()
    return server.getsockname()[1], got


@pytest.mark.parametrize("trace_name,start_s", [("constant", 0.0),
                                                ("Verizon-LTE-short.up", 30.0)])
def test_userspace_shaper_delivers_in_the_time_the_trace_predicts(trace_name, start_s):
    trace = Trace.constant(2.4) if trace_name == "constant" else Trace.load(trace_name, 0.1)
    port, got = _sink()
    size = 60_000
    with UserspaceLink(trace, port, one_way_delay_ms=15, start_offset_s=start_s) as link:
        sender = socket.create_connection(("127.0.0.1", link.port))
        sent_at = time.monotonic()
        start_ms = link.trace_time_ms(sent_at)
        sender.sendall(bytes(size))
        sender.close()
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got and got[0][0] == size and link.bytes_up == size
    # the trace needs ceil(size / 1500) opportunities after start_ms, then the delay
    needed = -(-size // PACKET_BYTES)
    index = trace._cumulative(start_ms) + needed - 1
    loops, within = divmod(index, len(trace.opportunities_ms))
    predicted_s = (loops * trace.period_ms + trace.opportunities_ms[within] - start_ms
                   + 15) / 1000
    elapsed = got[0][1] - sent_at
    assert elapsed == pytest.approx(predicted_s, abs=0.03 + 0.02 * predicted_s)


def test_restarting_the_trace_clock_moves_the_uplinks_place_with_it():
    """The runner starts the trace clock provisionally, the devices warm up over the link,
    then the clock starts again with input 0. Traffic before the restart must not leave the
    uplink's next opportunity ahead of the restarted clock: a packet sent right after the
    restart crosses at once, not after the warm-up's second of trace."""
    port, arrivals = _sink()

    def send(size: int) -> float:
        """Seconds from sending ``size`` bytes on a fresh connection to their arrival."""
        seen = len(arrivals)
        sent_at = time.monotonic()
        with socket.create_connection(("127.0.0.1", link.port)) as sender:
            sender.sendall(bytes(size))
        deadline = time.monotonic() + 10
        while len(arrivals) == seen and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(arrivals) > seen and arrivals[-1][0] == size
        return arrivals[-1][1] - sent_at

    # 1.2 Mbit/s: one 1500-byte opportunity every 10 ms
    with UserspaceLink(Trace.constant(1.2, seconds=60), port, one_way_delay_ms=5) as link:
        link.started_at = time.monotonic()
        assert send(150_000) > 0.9  # the "warm-up": 100 opportunities, a second of trace
        link.started_at = time.monotonic()  # input 0: the clock starts again
        assert send(PACKET_BYTES) < 0.25  # one opportunity away, not a second


@pytest.mark.skipif(kernel_link_problem() is not None,
                    reason=f"kernel link unavailable: {kernel_link_problem()}")
def test_kernel_link_sets_up_shapes_and_tears_down():
    with KernelLink(Trace.constant(4.0), one_way_delay_ms=10) as link:
        names = subprocess.run(["ip", "netns", "list"], capture_output=True,
                               text=True).stdout
        assert link.device_ns in names and link.edge_ns in names
        server = subprocess.Popen(link.exec_prefix("edge") + [
            sys.executable, "-c",
            f"import socket;s=socket.socket();s.bind(('{link.edge_ip}',9000));s.listen()\n"
            "c,_=s.accept()\nn=0\nwhile (d:=c.recv(65536)): n+=len(d)\nprint(n)"],
            stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)
        started = time.monotonic()
        subprocess.run(link.exec_prefix("device") + [
            sys.executable, "-c",
            "import socket,time\nfor _ in range(50):\n  try: s=socket.create_connection(("
            f"'{link.edge_ip}',9000)); break\n  except OSError: time.sleep(0.05)\n"
            "s.sendall(bytes(400000))"], check=True, timeout=30)
        assert server.communicate(timeout=30)[0].strip() == "400000"
        elapsed = time.monotonic() - started
        assert 0.6 < elapsed < 1.6  # 400 kB at 4 Mbit/s is 0.8 s (tbf lets a burst through)
        assert all("delay" in note for note in link.not_emulated)  # only netem may be missing
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert link.device_ns not in names and link.edge_ns not in names


def test_the_probe_study_times_probes_on_the_trace_and_measures_a_steady_link():
    from experiments.bench.probe_study import ProbePlan, one_run, transfer_ms

    steady = Trace.constant(12.0, seconds=10)  # one 1500-byte opportunity per ms
    assert transfer_ms(steady, 100.0, 15_000) == pytest.approx(10, abs=1)
    assert transfer_ms(steady, 9_995.0, 15_000) == pytest.approx(10, abs=1)  # it loops
    run = one_run(steady, 2.0, 5.0, ProbePlan(1.0, 1.0, 50.0, 3))
    assert run["median_error"] < 0.1 and 0 < run["link_share"] < 0.1
    dead = Trace.from_opportunities("outage", np.array([1, 60_000]))  # nothing for a minute
    waiting = one_run(dead, 1.0, 20.0, ProbePlan(1.0, 1.0, 50.0, 3))["link_share"]
    # each probe waits out its 2 s timeout, the next comes 1 s later: 2 s of every 3
    assert waiting == pytest.approx(2 / 3, abs=0.05)


def test_oracle_is_right_on_a_hand_built_trace(card):
    # second 0: a fast link; second 1: an outage
    opportunities = np.concatenate([np.repeat(np.arange(1, 1000), 4), [2000]])
    trace = Trace.from_opportunities("hand-built", opportunities)
    full_ms = card.full.latency_ms
    # the device ran its whole network 40x slower than the card says
    measured = [{"config": "local", "where": "local", "fallback": False,
                 "device_ms": 40 * full_ms, "server_ms": 0.0, "overhead_ms": 0.5}]
    records = [{"t": 0.5, "index": 0}, {"t": 0.6, "index": 1}, {"t": 1.5, "index": 2}]
    result = oracle(card, trace, 0.0, 10.0, records, measured, RPI4, None)
    planner = Planner(card, "adaptive", None, None, RPI4)
    common = dict(rtt_ms=10.0, server_queue_ms=0.0, edge_ms_per_mmac=0.05,
                  head_speed_factor=40.0, battery_level=1.0)
    fast = planner.plan(Estimates(bandwidth_bps=trace.capacity_bps(0, 1000),
                                  edge_available=True, **common))
    outage = planner.plan(Estimates(bandwidth_bps=1.0, edge_available=False, **common))
    assert fast.config.placement is not Placement.LOCAL
    assert outage.config.placement is Placement.LOCAL
    expected = (2 * fast.latency_ms + outage.latency_ms) / 3 + 0.5  # + the client overhead
    assert result["mean_latency_ms"] == pytest.approx(expected)
    assert result["head_speed_factor"] == pytest.approx(40.0)
    assert set(result["configs"]) == {str(fast.config), str(outage.config)}
    # the per-input choices that oracle-replay runs, and where they finish inputs
    assert result["schedule"] == {0: str(fast.config), 1: str(fast.config),
                                  2: str(outage.config)}
    assert result["switches"] == 1 and sum(result["placements"].values()) == pytest.approx(1)
    assert result["placements"]["local"] >= 1 / 3


def test_scenarios_load_check_and_expand_to_the_grid(tmp_path):
    from experiments.grid import GRID_POLICIES, GRID_TRACES

    default = load_scenario("default")
    assert default.policies[0] == "adaptive" and default.device == "pizero2"
    assert {"local-exit", "fixed", "neurosurgeon", "edgent", "edgent-paper"} \
        <= set(default.policies)
    cells = grid(default)
    assert len(cells) == 16 and len({c.name for c in cells}) == 16
    assert {c.rtt_ms for c in cells} == {10.0, 40.0} and {c.scale for c in cells} == {1.0}
    assert all(c.policies == GRID_POLICIES and c.trace_start_s == GRID_TRACES[c.trace]
               for c in cells)
    driving = grid(default, ["ATT-LTE-driving", "Verizon-LTE-short-pizero2-rtt10"])
    assert [c.name for c in driving] == [
        "ATT-LTE-driving-rpi4-rtt10", "ATT-LTE-driving-rpi4-rtt40",
        "ATT-LTE-driving-pizero2-rtt10", "ATT-LTE-driving-pizero2-rtt40",
        "Verizon-LTE-short-pizero2-rtt10"]
    assert [c.lanes for c in driving] == [2, 2, 4, 4, 4]  # a Pi Zero 2's device mostly sleeps
    assert {c.lanes for c in grid(default, None, 1)} == {1}
    with pytest.raises(ScenarioError, match="no grid cell matches Sprint.*ATT-LTE-driving"):
        grid(default, ["Sprint"])
    second = default.repetition(1)
    assert second.trace_start_s == default.trace_start_s + default.images / default.rate_hz + 6
    assert second.seed == default.seed + 1 and second.name.endswith("rep2")
    bad = tmp_path / "bad.toml"
    bad.write_text('[scenario]\ntrace = "ATT-LTE-driving.up"\nspeed = 3\n')
    with pytest.raises(ScenarioError, match="speed"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match="unknown device"):
        Scenario(device="cray")


def test_the_held_out_cells_are_not_where_anything_was_tuned():
    """The grid's offsets stay clear of every stretch a scenario or an earlier grid used
    (docs/tuning.md): ATT from 265 s, and the short traces' first and last 25 s."""
    from experiments.grid import GRID_IMAGES, GRID_RATE_HZ, GRID_REPETITIONS, GRID_TRACES

    length = {"ATT-LTE-driving.up": 1012, "Verizon-EVDO-driving.up": 1065,
              "TMobile-LTE-short.up": 140, "Verizon-LTE-short.up": 140}
    for trace, start in GRID_TRACES.items():
        cell = Scenario(trace=trace, trace_start_s=start, images=GRID_IMAGES,
                        rate_hz=GRID_RATE_HZ)
        last = cell.repetition(GRID_REPETITIONS - 1)
        end = last.trace_start_s + GRID_IMAGES / GRID_RATE_HZ
        assert end <= length[trace], trace  # no repetition wraps round the trace
        if trace == "ATT-LTE-driving.up":
            assert start > 265 + 60
        if length[trace] == 140:
            assert start >= 25 and end <= 140 - 25 + 10


def test_a_busy_device_slows_only_inside_its_window():
    import time

    from experiments.device_worker import CompetingLoad

    t0 = time.monotonic()
    assert CompetingLoad((0.0, 60.0, 0.6), t0)() == pytest.approx(2.5)
    assert CompetingLoad((30.0, 60.0, 0.6), t0)() == 1.0
    assert CompetingLoad((0.0, 60.0, 0.6))() == 1.0  # before input 0's time is known
    assert load_scenario("busy-device").busy == (5.0, 12.0, 0.6)
    with pytest.raises(ScenarioError, match="busy"):
        Scenario(busy=(5.0, 2.0, 0.5))


def _frame(t: float, index: int, where: str = "local", config: str = "local/int8",
           response_ms: float = 40.0, label: int = 0, **extra: object) -> dict[str, object]:
    return {"t": t, "device": 0, "index": index, "where": where, "config": config,
            "response_ms": response_ms, "total_ms": response_ms, "label": label,
            "t_arrival": t, "t_end": t + response_ms / 1000, "bytes_sent": 0,
            "energy_mj": 1.0, "fallback": False, "bandwidth_estimate_bps": 0.0,
            "true_capacity_bps": 0.0, **extra}


def _dropped(t: float, index: int, dropped_at: float) -> dict[str, object]:
    return {"t": t, "device": 0, "index": index, "dropped": True, "t_arrival": t,
            "t_dropped": dropped_at}


def test_the_report_splits_a_busy_run_before_during_and_after_the_load():
    from experiments.report import busy_window, return_after_load
    from experiments.runner import PolicyRun

    run = PolicyRun("adaptive", [_frame(1.0, 0, "device-exit", response_ms=40.0),
                                 _frame(6.0, 1, "edge", "offload/jpeg90", 80.0),
                                 _frame(7.0, 2, "local", response_ms=100.0),
                                 _dropped(8.0, 3, 8.1),
                                 _frame(13.0, 4, "device-exit", response_ms=42.0)],
                    expected=5, bytes_up=0, bytes_down=0, seconds=1.0)
    phases = busy_window((5.0, 12.0, 0.6), {"adaptive": run})["adaptive"]
    assert [p["frames"] for p in phases.values()] == [1, 2, 1]  # dropped frames are apart
    assert phases["during"]["mean_response_ms"] == pytest.approx(90.0)
    assert phases["during"]["placements"] == {"local": 0.5, "split": 0.0,
                                              "offload-input": 0.5}
    assert phases["before"]["placements"]["local"] == phases["after"]["placements"]["local"] == 1
    reference = PolicyRun("local-exit", [_frame(13.0, 4, response_ms=40.0)], 1, 0, 0, 1.0)
    back = return_after_load((5.0, 12.0, 0.6), run, reference)
    assert back["back_after_s"] == pytest.approx(1.0) and back["met"]


def test_a_dropped_frame_is_scored_by_the_answer_shown_when_it_was_dropped():
    from experiments.report import shown_labels, summarize_policy
    from experiments.runner import PolicyRun

    records = [_frame(0.0, 0, label=1, response_ms=250.0),  # answered at 0.25 s
               _dropped(0.1, 1, 0.25),                       # dropped at 0.25 s: shows 1
               _frame(0.2, 2, label=2, response_ms=300.0),   # answered at 0.5 s
               _dropped(0.3, 3, 0.1)]                        # dropped before any answer
    shown = shown_labels(records)
    assert shown == {(0, 0): 1, (0, 1): 1, (0, 2): 2, (0, 3): -1}
    labels = np.array([1, 1, 0, 0])
    scenario = Scenario(images=5, rate_hz=10.0)
    row = summarize_policy(PolicyRun("p", records, expected=5, bytes_up=0, bytes_down=0,
                                     seconds=1.0), labels, scenario)
    assert row["answered"] == 2 and row["dropped"] == 2 and row["lost"] == 1
    assert row["accuracy"] == pytest.approx(2 / 4)  # frames 0 and 1 right
    assert row["mean_response_ms"] == pytest.approx(275.0)
    assert row["drop_rate"] == pytest.approx(2 / 5)


def test_the_per_frame_bound_is_each_frames_quickest_full_accuracy_answer():
    from experiments.report import against_bound, per_frame_bound
    from experiments.runner import PolicyRun

    full = {0: 3, 1: 4}
    fast_wrong = PolicyRun("a", [_frame(0, 0, response_ms=10.0, label=9),
                                 _frame(0, 1, response_ms=20.0, label=4)], 2, 0, 0, 1.0)
    slow_right = PolicyRun("b", [_frame(0, 0, response_ms=30.0, label=3),
                                 _frame(0, 1, response_ms=50.0, label=4)], 2, 0, 0, 1.0)
    bound = per_frame_bound({"a": fast_wrong, "b": slow_right}, full)
    assert bound == {(0, 0): 30.0, (0, 1): 20.0}  # a wrong answer is no bound
    assert against_bound(slow_right, bound)["ratio"] == pytest.approx(80 / 50)


def test_paired_ratios_have_t_intervals_and_verdicts_that_can_say_not_resolved():
    from experiments.statistics import (
        MET,
        NOT_MET,
        NOT_RESOLVED,
        paired_ratio,
        pooled_ratio,
        verdict,
    )

    same = paired_ratio([10.0, 20.0, 30.0], [12.5, 25.0, 37.5])
    assert same.value == pytest.approx(0.8) and same.low == pytest.approx(0.8)
    noisy = paired_ratio([10.0, 20.0, 9.0], [12.0, 18.0, 12.0])
    assert noisy.low < noisy.value < noisy.high
    logs = np.log([10 / 12, 20 / 18, 9 / 12])
    half = 4.303 * logs.std(ddof=1) / 3 ** 0.5
    assert noisy.high == pytest.approx(np.exp(logs.mean() + half), rel=1e-3)
    assert verdict(same, 0.85) == MET
    assert verdict(paired_ratio([10.0, 10.0], [9.0, 9.0]), 0.85) == NOT_MET
    assert verdict(noisy, 0.85) == NOT_RESOLVED
    pooled = pooled_ratio([([10.0, 20.0, 30.0], [12.5, 25.0, 37.5]),
                           ([10.0, 20.0, 9.0], [12.0, 18.0, 12.0])])
    assert pooled.value == pytest.approx(np.sqrt(same.value * noisy.value))
    assert pooled.low < pooled.value < pooled.high


def test_repetitions_combine_into_paired_ratios():
    from experiments.report import combine_repetitions

    def summary(adaptive_ms: float, peer_ms: float) -> dict:
        row = {"mean_response_ms": adaptive_ms, "lost": 0, "switches": 2, "accuracy": 0.9,
               "energy_mj_per_frame": 1.0, "placements": {"local": 0.5, "split": 0.5},
               "dropped": 1}
        return {"policies": {"adaptive": row, "local": {**row, "mean_response_ms": peer_ms}},
                "bound": {"frames": 10, "ratio": 1.1, "bound_mean_ms": 9.0},
                "device_emulation": {}, "plots": [], "run_seconds": 1.0,
                "bandwidth_estimate_median_error": 0.2}

    combined = combine_repetitions(load_scenario("default"),
                                   [summary(10, 8), summary(12, 8), summary(14, 11)])
    adaptive = combined["policies"]["adaptive"]
    assert adaptive["mean_response_ms"] == pytest.approx(12)
    assert adaptive["ci95_response_ms"] == pytest.approx(4.303 * 2 / 3 ** 0.5, rel=1e-3)
    assert adaptive["switches"] == 6 and adaptive["dropped"] == 3
    ratio = combined["ratios"]["local"]
    assert ratio["ratio"] == pytest.approx((10 / 8 * 12 / 8 * 14 / 11) ** (1 / 3))
    assert ratio["ci95_low"] < ratio["ratio"] < ratio["ci95_high"]
    assert combined["repetitions"] == 3 and combined["bound"]["ratio"] == pytest.approx(1.1)


def test_a_short_scenario_runs_end_to_end_on_the_camera_clock(tmp_path, checkpoint):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "experiments", "run", "--trace", "Verizon-LTE-short.up",
         "--n", "12", "--rate-hz", "20", "--policies",
         "adaptive,local,predicted-best-replay", "--json", "--out", str(out),
         "--checkpoint", str(checkpoint)],
        capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert set(summary["policies"]) == {"adaptive", "local", "predicted-best-replay"}
    for row in summary["policies"].values():
        assert set(row) >= {"accuracy", "mean_response_ms", "p95_response_ms",
                            "answered_fps", "drop_rate", "bytes_per_frame",
                            "energy_mj_per_frame", "fallbacks", "lost", "placements"}
        assert row["lost"] == 0 and row["ci95_response_ms"] > 0
        assert sum(row["placements"].values()) == pytest.approx(1)
    assert summary["policies"]["local"]["placements"]["local"] == 1
    assert summary["policies"]["local"]["bytes_per_frame"] == 0
    assert summary["adaptive_over"]["local"]["ratio"] > 0
    assert summary["bound"]["frames"] > 0 and summary["bound"]["ratio"] > 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["command"].startswith("python -m experiments run") and meta["host"]["cpu"]
    import gzip

    with gzip.open(out / "records.jsonl.gz", "rt") as f:
        records = [json.loads(line) for line in f]
    frames = {(r["policy"], r["index"]) for r in records}
    assert len(frames) == len(records) == 36  # every frame answered or dropped, once
    answered = [r for r in records if not r.get("dropped")]
    assert {"config", "where", "device_ms", "response_ms", "t_arrival", "energy_mj",
            "true_capacity_bps", "bandwidth_estimate_bps", "fallback"} <= set(answered[0])
    for r in answered:  # response is from arrival: at least the device's own time
        assert r["response_ms"] >= r["total_ms"] - 1
    for name in ("summary.md", "summary.csv", "latency_over_time.png",
                 "adaptive_choices.png", "accuracy_vs_bytes.png"):
        assert (out / name).is_file(), name


def _process_parents() -> dict[int, int]:
    """{pid: parent pid} of every live (not zombie) process, from /proc."""
    from pathlib import Path

    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        if state != "Z":
            parents[int(stat.parent.name)] = int(parent)
    return parents


def _live_processes() -> set[int]:
    return set(_process_parents())


def _descendants(pid: int) -> set[int]:
    """Every live process under ``pid``."""
    children: dict[int, list[int]] = {}
    for child, parent in _process_parents().items():
        children.setdefault(parent, []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def test_a_stopped_run_takes_its_edge_servers_and_device_workers_with_it(tmp_path, checkpoint):
    import os
    import signal

    run = subprocess.Popen(
        [sys.executable, "-m", "experiments", "run", "--trace", "Verizon-LTE-short.up",
         "--n", "400", "--rate-hz", "20", "--policies", "adaptive,local", "--lanes", "2",
         "--out", str(tmp_path / "run"), "--checkpoint", str(checkpoint)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: set[int] = set()
    deadline = time.monotonic() + 120
    while len(seen) < 4 and time.monotonic() < deadline:  # 2 edge servers, 2 devices
        seen |= _descendants(run.pid)
        time.sleep(0.2)
    assert len(seen) >= 4, run.stderr.read() if run.poll() is not None else seen
    os.kill(run.pid, signal.SIGTERM)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert "stopped by SIGTERM" in stderr
    assert not seen & _live_processes()



def test_emulated_device_time_is_its_cpu_time_times_the_precision_factor(checkpoint,
                                                                          test_split):
    """The device's model calls take factor × their CPU time, at the factor of their
    precision (lower bounds only: a loaded host can only make them slower)."""
    import time

    from device_client.client import DeviceClient
    from device_client.options import DeviceOptions
    from experiments.emulation import emulate, stretch

    def work() -> None:
        end = time.thread_time() + 0.005
        while time.thread_time() < end:
            pass

    started = time.perf_counter()
    stretch(work, lambda: 6.0)()
    assert time.perf_counter() - started >= 6 * 0.005 * 0.95
    with DeviceClient(checkpoint, None, policy="local",
                      device=DeviceOptions(battery="1.0")) as client:
        plain = client.infer(test_split.images[0]).latency.device_ms
        emulate(client, fp32_factor=20.0, int8_factor=1.0)
        slowed = client.infer(test_split.images[0]).latency.device_ms
        fresh = type(client.head_speed)()  # forget what that input taught it
        client.knowledge.head_speed = client.head_speed = fresh
        client.warm_up()  # one measured run replaces the prior: the planner knows at once
        learned = client.head_speed.factor
    assert slowed >= 5 * plain  # 20x its CPU time; plain, on a loaded host, may be 2-3x
    assert learned >= 5


def test_identical_device_work_is_priced_at_its_least_cpu_time(tmp_path):
    """A shared host's CPU time for the same work rises with what else runs; a device runs
    alone. Identical work (the same key) costs the least CPU time it has taken so far, in
    this process or in any earlier device's (through the shared file)."""
    import time

    from experiments.calibration import LeastCpu
    from experiments.emulation import stretch

    def work(ms: float) -> None:
        end = time.thread_time() + ms / 1000
        while time.thread_time() < end:
            pass

    table = tmp_path / "least_cpu.json"
    least = LeastCpu("model", table)
    same = stretch(work, lambda: 5.0, lambda args, out: "same", least)
    other = stretch(work, lambda: 5.0, lambda args, out: ("other", args[0]), least)
    same(10.0)  # 50 ms
    started = time.perf_counter()
    same(20.0)  # as if contention had doubled its CPU time: still priced at 10 ms of CPU
    assert time.perf_counter() - started < 0.085
    started = time.perf_counter()
    other(20.0)  # other work is priced as itself
    assert time.perf_counter() - started >= 5 * 0.020 * 0.95
    least.save()

    later = LeastCpu("model", table)  # the next device, another process on the same host
    assert later.seconds[repr("same")] < 0.015
    assert later.seconds[repr(("other", 20.0))] >= 0.0195
    started = time.perf_counter()
    stretch(work, lambda: 5.0, lambda args, out: "same", later)(20.0)
    assert time.perf_counter() - started < 0.085  # priced at what the first device found
    assert LeastCpu("another model", table).seconds == {}


def test_the_anchors_are_the_least_seen_on_this_host_and_lanes_can_ask_at_once(tmp_path):
    """Two lanes start on a host with no table: both get the same times (FX tracing, which
    the int8 anchor needs, is not thread-safe). A new measurement keeps the least; a table
    from another host (or another boot) is not used."""
    from concurrent.futures import ThreadPoolExecutor

    from experiments.calibration import ANCHORS, host_times

    table = tmp_path / "least_cpu.json"
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: host_times(table, measure=False), range(2))
    assert first == second and all(ms > 0 for ms in first)
    again = host_times(table)
    assert again[0] <= first[0] and again[1] <= first[1]
    saved = json.loads(table.read_text())
    assert saved["scopes"][ANCHORS][repr("int8")] * 1000 == again[1]
    saved["host"] = "another machine"
    saved["scopes"][ANCHORS] = {repr("fp32"): 1e-6, repr("int8"): 1e-6}
    table.write_text(json.dumps(saved))
    assert host_times(table, measure=False)[1] > 1e-3  # measured afresh, not 1e-6 s


def test_grid_targets_are_computed_from_the_cells_and_can_fail():
    from experiments.grid import grid_targets

    def cell(name: str, adaptive: list[float], peers: dict[str, list[float]]) -> dict:
        def row(reps: list[float]) -> dict:
            return {"mean_response_ms": float(np.mean(reps)), "repetition_mean_response_ms":
                    reps, "lost": 0, "dropped": 0, "accuracy": 0.87,
                    "placements": {"local": 1.0}}
        return {"scenario": {"name": name, "trace": name},
                "policies": {"adaptive": row(adaptive), "adaptive-v0": row(adaptive),
                             "local": row([40.0] * len(adaptive)),
                             **{p: row(v) for p, v in peers.items()}},
                "bound": {"ratio": 1.2}, "bandwidth_estimate_median_error": 0.2}

    good = [cell("a", [20.0, 21.0, 19.0], {"local-exit": [30.0, 31.0, 29.0],
                                           "edgent": [60.0, 61.0, 59.0],
                                           "edgent-paper": [90.0, 91.0, 89.0]}),
            cell("b", [25.0, 24.0, 26.0], {"local-exit": [31.0, 30.0, 32.0],
                                           "edgent": [28.0, 30.0, 29.0],
                                           "edgent-paper": [90.0, 91.0, 89.0]})]
    targets = grid_targets(good)
    assert targets["strongest_variants"]["edgent"] == "edgent"  # not its paper's
    headline = targets["headline_adaptive_over_best_peer"]
    assert headline["best_peer"] == "local-exit" and headline["verdict"] == "met"
    assert headline["ci95_low"] < headline["ratio"] < headline["ci95_high"] <= 0.85
    assert targets["no_cell_worse_than_its_best_peer"]["met"]
    assert targets["no_cell_worse_than_its_best_peer"]["cells"]["b"]["best_peer"] == "edgent"
    assert targets["lost_frames"]["met"]
    bad = [cell("c", [35.0, 36.0, 34.0], {"local-exit": [30.0, 31.0, 29.0]})]
    targets = grid_targets(bad)
    assert targets["headline_adaptive_over_best_peer"]["verdict"] == "not met"
    assert targets["no_cell_worse_than_its_best_peer"]["worse"] == ["c"]


def test_the_oracle_prices_each_config_by_what_the_run_measured_of_it():
    from experiments.oracle import device_speed_factors
    from splitnet.zoo import checkpoint_for, load_card

    card = load_card(checkpoint_for("resnet18_imagenette"))
    planner = Planner(card, "adaptive")
    local, local8 = Config.local(), Config.local(int8=True)
    split8 = Config(split=2, width=8, bits=4, int8=True)
    records = [{"config": str(local), "where": "local", "fallback": False,
                "device_ms": 6 * card.device_ms(local)},
               {"config": str(local8.with_exit(0.6)), "where": "local", "fallback": False,
                "device_ms": 5 * card.device_ms(local8)},
               {"config": str(split8), "where": "local", "fallback": True,  # not a sample
                "device_ms": 1000.0}]
    factors = device_speed_factors(card, planner, records)
    assert factors[local] == pytest.approx(6) and factors[local8] == pytest.approx(5)
    assert factors[split8] == pytest.approx(5)  # unmeasured: its precision's median
    assert factors[Config(split=3, width=12, bits=2)] == pytest.approx(6)


def test_the_oracle_prices_sending_by_what_the_run_measured_of_it():
    """A sent input's extra client time (encode, request, reply) is what the run's edge
    answers took over its local inputs; fallbacks are not samples."""
    from experiments.oracle import measured_constants
    from splitnet.zoo import checkpoint_for, load_card

    card = load_card(checkpoint_for("resnet18_imagenette"))
    split8 = Config(split=2, width=8, bits=4, int8=True)

    def record(config: Config, where: str, overhead_ms: float, fallback: bool = False):
        return {"config": str(config), "where": where, "fallback": fallback, "device_ms": 10.0,
                "server_ms": 5.0, "overhead_ms": overhead_ms}

    records = ([record(Config.local(), "local", 2.0)] * 3
               + [record(Config.local(int8=True).with_exit(0.6), "device-exit", 2.0)]
               + [record(split8, "edge", 17.0)] * 3 + [record(split8, "local", 90.0, True)]
               + [record(Config.offload_input("jpeg90"), "edge", 6.0)] * 2)
    constants = measured_constants(card, records)
    assert constants["client_overhead_ms"] == 2.0
    assert constants["split_send_ms"] == 15.0 and constants["offload_send_ms"] == 4.0
    only_local = measured_constants(card, records[:4])
    assert only_local["split_send_ms"] == only_local["offload_send_ms"] == 0.0


def test_a_frame_stream_reports_sustained_fps_drops_and_latency(tmp_path, checkpoint):
    """A camera far faster than the emulated device: frames are dropped and counted, every
    frame taken is answered, and the table says what each policy sustained."""
    result = subprocess.run(
        [sys.executable, "-m", "experiments", "stream", "--fps", "200", "--seconds", "2",
         "--device", "pizero2", "--policies", "local,offload-input", "--json",
         "--out", str(tmp_path / "stream"), "--checkpoint", str(checkpoint)],
        capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    table = json.loads(result.stdout)["policies"]
    assert set(table) == {"local", "offload-input"}
    for row in table.values():
        assert 0 < row["fps_sustained"] < 200 and row["drop_rate"] > 0
        assert row["p95_latency_ms"] >= row["p50_latency_ms"] > 0
        assert row["answered"] > 0 and row["accuracy"] > 0.5
    assert table["local"]["placements"]["local"] == 1
    assert (tmp_path / "stream" / "summary.md").read_text().count("|") > 10


def test_repetitions_share_edge_servers_started_side_by_side(tmp_path, checkpoint,
                                                             monkeypatch):
    """A grid starts a model's edge servers once (each took seconds of every repetition):
    a run given running edges uses them and starts none of its own; they are gone after."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    import experiments.runner as runner

    def healthy(port: int) -> bool:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5)
            except grpc.RpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

    scenario = Scenario(name="shared", trace="Verizon-LTE-short.up", images=3,
                        rate_hz=20, policies=("offload-input", "local"), lanes=2)
    with runner.edge_servers(checkpoint, 2) as ports:
        assert len(set(ports)) == 2 and all(healthy(p) for p in ports)

        def no_new_edges(*args: object, **kwargs: object) -> None:
            raise AssertionError("the run started an edge server of its own")

        monkeypatch.setattr(runner, "edge_server", no_new_edges)
        runs = runner.run_scenario(scenario, tmp_path, checkpoint, show_progress=False,
                                   edges=ports)
        assert all(r["where"] == "edge" for r in runs["offload-input"].records)
        assert len(runs["offload-input"].records) == 3 and len(runs["local"].records) == 3
    assert not any(healthy(p) for p in ports)
