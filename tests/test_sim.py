"""The simulator: its link keeps the emulated link's delivery model, its edge the server's
batching and refusal rules, and its devices run the runtime's own planner and estimators
on simulated time (real card, real traces)."""

from __future__ import annotations

import pytest

from device_client.knowledge import DeviceKnowledge
from device_client.planner import Planner
from experiments.scenario import Scenario
from experiments.sim.cells import per_frame_bound, simulate_runs, summarize
from experiments.sim.device_times import DeviceTimes
from experiments.sim.edge import EdgeProfile, Job, SimEdge, fitted, interpolate
from experiments.sim.engine import Simulation
from experiments.sim.fleet import run_fleet
from experiments.sim.link import SimUplink
from experiments.traces import PACKET_BYTES, Trace
from splitnet.config import Config


def fast_edge(front_ms: float = 0.1) -> EdgeProfile:
    """An edge of 1 ms + 0.1 ms per item for a 4,100-MMAC network, scaled by MACs."""
    return EdgeProfile("test", "a test edge", "made up for the test", fitted(1.0, 0.1),
                       lambda kind: 0.05, front_ms, 1)


def test_uplink_delivers_at_trace_opportunities_and_wastes_idle_ones() -> None:
    trace = Trace.from_opportunities("every-10ms", __import__("numpy").arange(10, 1001, 10))
    link = SimUplink(trace, start_s=0.0, one_way_ms=5.0)
    # 3,000 bytes at t=0: two opportunities (10 and 20 ms), then 5 ms of delay
    assert link.send(0.0, 2 * PACKET_BYTES) == pytest.approx(0.025)
    # queued behind them: the third opportunity
    assert link.send(0.0, 100) == pytest.approx(0.035)
    # after an idle second the unused opportunities are gone: the next one after 1.502 s
    assert link.send(1.502, 100) == pytest.approx(1.51 + 0.005)


def test_interpolated_batch_curve() -> None:
    assert interpolate([1, 2, 4], [10.0, 12.0, 16.0], 3) == pytest.approx(14.0)
    assert interpolate([1, 2, 4], [10.0, 12.0, 16.0], 8) == pytest.approx(32.0)


def run_burst(devices: list[int], max_queue: int, share: int
              ) -> tuple[SimEdge, list[float], list[tuple[str, float]]]:
    """Requests of one config from ``devices`` (one each, in order) at time 0."""
    sim = Simulation()
    edge = SimEdge(sim, fast_edge(front_ms=0.0), lambda config: 4100.0, max_batch_size=4,
                   max_queue=max_queue, per_device_in_flight=share)
    replies: list[float] = []
    refusals: list[tuple[str, float]] = []
    for device in devices:
        sim.at(0.0, edge.submit, Job(device, Config.parse("split2/w4/b4"), 0.0,
                                     lambda reply: replies.append(sim.now),
                                     lambda why: refusals.append((why, sim.now))))
    sim.run(10.0)
    return edge, replies, refusals


def test_edge_batches_up_to_its_size_and_answers_every_request() -> None:
    edge, replies, refusals = run_burst([0, 1, 2, 3, 4, 5], max_queue=256, share=8)
    assert len(replies) == 6 and not refusals
    assert edge.batches == 2  # 4, then the 2 that waited
    # requests leave the front (0.05 ms of decoding each) at 0.05, 0.10, ... ms; the batch
    # is full at 0.20 ms and takes 1 + 4 × 0.1 ms
    assert min(replies) == pytest.approx(0.0016, abs=1e-6)


def test_edge_refuses_a_full_queue_at_once_and_a_device_past_its_share_later() -> None:
    _, replies, refusals = run_burst([0, 1, 2, 3, 4, 5, 6], max_queue=6, share=8)
    assert len(replies) == 6 and [why for why, _ in refusals] == ["the edge's queue is full"]
    assert refusals[0][1] < 0.001
    _, replies, refusals = run_burst([0, 0, 0, 1], max_queue=256, share=2)
    assert len(replies) == 3 and [why for why, _ in refusals] == ["past this device's share"]
    assert refusals[0][1] == pytest.approx(0.25 + 0.00015)


def test_knowledge_ages_on_the_simulated_clock(checkpoint, card) -> None:
    sim = Simulation()
    knowledge = DeviceKnowledge(card, Planner(card).candidates, sim.clock)
    knowledge.learn_failure(1000, 100.0, timed_out=True, reason="test")
    assert knowledge.failures.rate >= 0.1 and not knowledge.health.up
    sim.run(60.0)  # no wall time passes; twelve half-lives of simulated time do
    assert knowledge.failures.rate < 1e-3
    assert knowledge.health.probe_due()


def test_a_simulated_cell_accounts_for_every_frame_and_moves_with_the_link(card, monkeypatch
                                                                          ) -> None:
    times = DeviceTimes(Planner(card).candidates, 60.0, 60.0)  # slow: offloading pays
    scenario = Scenario(name="sim-test", trace="ATT-LTE-driving.up", trace_start_s=600,
                        rtt_ms=10, device="pizero2", images=30, rate_hz=10, repetitions=2)
    monkeypatch.setattr("experiments.sim.cells.for_device", lambda device, card: times)
    runs = simulate_runs(scenario, card, fast_edge(), ["adaptive", "local-exit"])
    dead = simulate_runs(scenario.with_options(scale=0.001), card, fast_edge(), ["adaptive"])
    for policy_runs in (*runs.values(), *dead.values()):
        for run in policy_runs:
            assert sorted(r.frame for r in run.records) == list(range(30))  # none lost
    good, local = summarize(runs["adaptive"]), summarize(runs["local-exit"])
    assert good["placements"]["offload-input"] + good["placements"]["split"] > 0.5
    assert good["mean_response_ms"] < local["mean_response_ms"]
    assert summarize(dead["adaptive"])["placements"]["local"] > 0.8
    bound = per_frame_bound(runs, card.full.accuracy - 0.015)
    assert bound["ratio"] is not None and bound["ratio"] >= 1.0 - 1e-9


def test_a_small_fleet_shares_one_edge(card) -> None:
    row = run_fleet(card, fast_edge(), "adaptive", devices=6, replicas=2, seconds=90.0,
                    times={"rpi4": DeviceTimes(Planner(card).candidates, 5.0, 5.0),
                           "pizero2": DeviceTimes(Planner(card).candidates, 30.0, 30.0)})
    assert row["answered_fps"] > 0 and row["drop_rate"] < 0.5
    assert 0 <= row["edge_utilisation"] < 1
    assert row["offload_share_windows"]
