"""Device-side client overhead per inference, excluding model compute and the network.

    DeviceClient.infer ─► total time − head/local model time − round trip to the edge
                        = planning + encoding + decoding the reply + bookkeeping

It runs the client against a real edge server on loopback and prints the median overhead
for an offloading policy (the fixed BottleFit-style config) and for the adaptive planner, plus the
planner's own decision time. Usage: ``python -m experiments.bench.device --json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from device_client.client import DeviceClient
from device_client.options import DeviceOptions, LinkOptions, PolicyOptions
from device_client.planner import Planner
from edge_server.server import EdgeServer, ServerOptions
from splitnet.data.eval_sets import stream_images
from splitnet.zoo import DEFAULT_MODEL, checkpoint_for, list_zoo, load_card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.bench.device",
        description="Median device-side client overhead per inference (planning, encoding, "
                    "bookkeeping; not the model, not the network), against a loopback edge.")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=list_zoo(),
                        help="zoo model (default: %(default)s)")
    parser.add_argument("--n", type=int, default=300, help="inferences per policy")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    checkpoint = checkpoint_for(args.model)
    server = EdgeServer(ServerOptions(address="127.0.0.1:0", checkpoints=(checkpoint,),
                                      max_wait_ms=0.5, torch_threads=1)).start()
    images = stream_images(args.model).images[: args.n]
    planner = Planner(load_card(checkpoint))
    result: dict[str, object] = {"model": args.model, "n": args.n}
    try:
        for name, policy, fixed in (("fixed", "fixed", planner.default_fixed_config()),
                                    ("adaptive", "adaptive", None)):
            with DeviceClient(checkpoint, f"127.0.0.1:{server.port}",
                              policy=PolicyOptions(policy, fixed_config=fixed),
                              link=LinkOptions(monitor=False),
                              device=DeviceOptions(battery="1.0")) as client:
                for image in images[:20]:
                    client.infer(image)  # warm-up
                results = [client.infer(image) for image in images]
            overheads = [r.overhead_ms for r in results]
            result[name] = {
                "median_overhead_ms": statistics.median(overheads),
                "p95_overhead_ms": sorted(overheads)[int(0.95 * len(overheads))],
                "offloaded": sum(r.where == "edge" for r in results),
                "median_total_ms": statistics.median(r.latency.total_ms for r in results),
            }
    finally:
        server.stop(1)
    with DeviceClient(checkpoint, None, policy="adaptive",
                      device=DeviceOptions(battery="1.0")) as client:
        est = client.estimates()
        times = []
        for _ in range(1000):
            start = time.perf_counter()
            planner.plan(est)
            times.append((time.perf_counter() - start) * 1000)
    result["planner_decision_ms_median"] = statistics.median(times)
    result["planner_candidates"] = len(planner.candidates.configs)
    worst = max(result[k]["median_overhead_ms"]  # type: ignore[index]
                for k in ("fixed", "adaptive"))
    result["targets"] = {"client_overhead<=1ms": {"measured": worst, "met": worst <= 1.0}}
    print(json.dumps(result, indent=1) if args.json else
          f"median client overhead {worst:.3f} ms "
          f"({'met' if worst <= 1.0 else 'NOT met'}: target <= 1 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
