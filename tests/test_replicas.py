"""Several real edge replicas on loopback: devices spread their inputs over them, and losing
one mid-run loses no input while offloading goes on to the ones left."""

from __future__ import annotations

import threading

import pytest
from splitnet_proto.messages import LoadReport

from device_client.client import WHERE_EDGE, DeviceClient
from device_client.fallback import EdgeHealth
from device_client.options import DeviceOptions, LinkOptions, PolicyOptions
from device_client.replicas import LOAD_FRESH_S, Replica, resolve_targets
from edge_server.server import EdgeServer, ServerOptions
from splitnet.config import Config

FIXED = Config(split=3, width=4, bits=4)


def start_server(checkpoint) -> EdgeServer:
    return EdgeServer(ServerOptions(address="127.0.0.1:0", checkpoints=(checkpoint,),
                                    max_wait_ms=1)).start()


def answered(server: EdgeServer, model_id: str) -> float:
    """Requests the server answered, from its own Prometheus counter."""
    return server.metrics.requests.labels(model_id, "InferStream", "OK")._value.get()


def test_targets_are_a_list_a_dns_name_or_one_address():
    assert resolve_targets("10.0.0.1:1,10.0.0.2:2") == ["10.0.0.1:1", "10.0.0.2:2"]
    assert resolve_targets("edge:50051") == ["edge:50051"]
    assert resolve_targets("dns:///localhost:50051")[0].endswith(":50051")
    assert resolve_targets("ipv4:10.0.0.1:1,10.0.0.2:2") == ["ipv4:10.0.0.1:1,10.0.0.2:2"]
    with pytest.raises(ValueError, match="HOST:PORT"):
        resolve_targets("dns:///localhost")


def test_a_replicas_reported_queue_counts_in_requests_and_fades_as_the_report_ages():
    replica = Replica("edge:1", link=None, health=EdgeHealth())  # type: ignore[arg-type]
    assert replica.requests_ahead(0.0) == 0  # nothing known: no wait
    replica.load, replica.load_at = LoadReport(queue_ms_recent=12.0, service_ms=4.0), 10.0
    assert replica.requests_ahead(10.0) == 3  # 12 ms of queue = 3 requests of 4 ms
    assert replica.requests_ahead(10.0 + LOAD_FRESH_S / 2) == 2  # half trusted: 1.5 → 2
    assert replica.requests_ahead(10.0 + LOAD_FRESH_S * 0.9) == 0
    assert replica.requests_ahead(10.0 + LOAD_FRESH_S * 5) == 0  # never negative
    replica.in_flight = 2
    assert replica.requests_ahead(10.0) == 5
    replica.load = LoadReport(queue_ms_recent=0.4, service_ms=0.1)  # sub-ms service: 1 ms
    assert replica.requests_ahead(10.0) == 2


def test_several_devices_spread_their_inputs_over_the_replicas(checkpoint, shipped,
                                                               test_split):
    servers = [start_server(checkpoint) for _ in range(2)]
    edge = ",".join(f"127.0.0.1:{s.port}" for s in servers)
    results: list[list] = []
    try:
        def device(offset: int) -> None:
            # devices and edges share one process: wait as long as a busy host may need
            with DeviceClient(checkpoint, edge,
                              policy=PolicyOptions("fixed-paper", fixed_config=FIXED),
                              link=LinkOptions(offload_timeout_ms=10_000, monitor=False),
                              device=DeviceOptions(battery="1.0")) as client:
                results.append([client.infer(image)
                                for image in test_split.images[offset:offset + 30]])

        threads = [threading.Thread(target=device, args=(30 * k,)) for k in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        counts = [answered(s, shipped.model_id) for s in servers]
    finally:
        for server in servers:
            server.stop(1)
    assert [len(r) for r in results] == [30, 30, 30]
    assert all(r.where == WHERE_EDGE for device in results for r in device)
    assert sum(counts) == 90
    # both replicas carry a fair part of the load (a device pinned to one stream would put
    # all 90 on one). Not half each: inputs follow the load the replies report, and with
    # both servers in this process under a busy suite one reported more (25 against 65)
    assert min(counts) >= 90 * 0.2, counts


def test_a_replica_lost_mid_run_loses_nothing_and_the_other_carries_on(checkpoint, shipped,
                                                                      test_split):
    survivor, doomed = start_server(checkpoint), start_server(checkpoint)
    edge = f"127.0.0.1:{survivor.port},127.0.0.1:{doomed.port}"
    images = test_split.images[:60]
    try:
        with DeviceClient(checkpoint, edge, policy=PolicyOptions("fixed-paper", fixed_config=FIXED),
                          link=LinkOptions(offload_timeout_ms=2000),
                          device=DeviceOptions(battery="1.0")) as client:
            before = [client.infer(image) for image in images[:20]]
            assert answered(doomed, shipped.model_id) > 0  # it was in use
            doomed.stop(0)
            after = [client.infer(image) for image in images[20:]]
            per_replica = client.link.requests_per_replica()
    finally:
        survivor.stop(1)
    results = before + after
    assert len(results) == 60 and all(r.label >= 0 for r in results)  # nothing lost
    # at most the input in flight when the replica died was finished on the device; the
    # rest, and everything after, went to the surviving replica
    assert sum(r.where == WHERE_EDGE for r in after) >= len(after) - 1
    assert per_replica[f"127.0.0.1:{survivor.port}"] >= 40
