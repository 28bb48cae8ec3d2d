"""``python -m edge_server``: serve the zoo's models (or the ones named) over gRPC."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from dataclasses import fields, replace
from pathlib import Path
from types import FrameType
from typing import Any

from edge_server.engine import PRECISIONS
from edge_server.server import EdgeServer, Limits, ServerOptions
from splitnet.checkpoint import CheckpointError
from splitnet.tokens import (
    TokenError,
    add_token_options,
    host_of,
    plaintext_token_problem,
    read_token_table,
)
from splitnet.zoo import checkpoint_for, list_zoo


def parse_args(argv: list[str] | None = None) -> tuple[ServerOptions, float]:
    """Server options and the shutdown grace period, from the command line.

    Long because: one declarative list of the server's options, each with its help, then
    their checks."""
    parser = argparse.ArgumentParser(
        prog="python -m edge_server",
        description="Serve splitnet models over gRPC (splitnet.v1.EdgeInference): the tail of "
                    "every split config and the whole network for input images, for every "
                    "model in the zoo or the ones named. Each request names its model in "
                    "its 'x-splitnet-model-id' metadata. Batches "
                    "requests dynamically across clients, reports its load with every reply "
                    "and on a ZMQ PUB socket, and answers the standard gRPC health service.",
        epilog="Examples:\n"
               "  python -m edge_server                              # every zoo model, :50051\n"
               "  python -m edge_server --model resnet18_imagenette  # the camera model only\n"
               "  SPLITNET_TOKEN=s3cret python -m edge_server --address 0.0.0.0:50051 \\\n"
               "      --tls-cert server.crt --tls-key server.key --load-pub tcp://*:50052\n"
               "  python -m edge_server --metrics-port 9100          # Prometheus scrapes :9100\n"
               "Stop with Ctrl-C or SIGTERM: in-flight requests finish first.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default="127.0.0.1:50051",
                        help="host:port to listen on (default: %(default)s)")
    parser.add_argument("--model", action="append", choices=list_zoo(), default=[],
                        help="serve this zoo model; repeat for several (default: every zoo "
                             "model, unless --checkpoint is given)")
    parser.add_argument("--checkpoint", type=Path, action="append", default=[],
                        help="serve this checkpoint file; repeatable, with or without --model")
    parser.add_argument("--max-batch-size", type=int, default=32,
                        help="largest batch the model runs (default: %(default)s; 1 = no batching)")
    parser.add_argument("--max-wait-ms", type=float, default=2.0,
                        help="longest a request waits for others to batch with "
                             "(default: %(default)s)")
    parser.add_argument("--worker-stall-s", type=float, default=60.0,
                        help="a batch that takes the worker longer than this is a stalled "
                             "worker: its batch is run again by a fresh one and health reads "
                             "NOT_SERVING meanwhile (default: %(default)s)")
    parser.add_argument("--max-queue", type=int, default=256,
                        help="requests waiting before new ones get RESOURCE_EXHAUSTED "
                             "(default: %(default)s)")
    add_token_options(parser, "every call must present as 'authorization: Bearer TOKEN' "
                              "(the health service stays open); or lines 'NAME TOKEN', one "
                              "token per device, whose NAME keys that device's share of "
                              "the queue")
    parser.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate for TLS")
    parser.add_argument("--tls-key", type=Path, default=None, help="PEM private key for TLS")
    parser.add_argument("--tls-client-ca", type=Path, default=None,
                        help="mutual TLS: accept only devices whose certificate this PEM CA "
                             "signed (see the README for making one with openssl)")
    parser.add_argument("--load-pub", default=None,
                        help="ZMQ address to publish the load on, e.g. tcp://127.0.0.1:50052")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus metrics at http://ADDRESS:PORT/metrics "
                             "(splitnet_edge_*: requests by model, method and status; queue, "
                             "compute and request seconds; batch sizes; queue depth; bytes; "
                             "models served). Default: no metrics")
    parser.add_argument("--metrics-address", default="0.0.0.0",
                        help="address the metrics port listens on (default: %(default)s)")
    defaults = Limits()
    parser.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                        help="change one of the server's bounds; repeatable. Names and "
                             "defaults: " + ", ".join(f"{f.name}={getattr(defaults, f.name)}"
                                                      for f in fields(Limits)))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: all cores)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="what the models' edge parts run in (default: %(default)s: each "
                             "model's own, except that a bf16 model runs in fp32 on a CPU "
                             "where bf16 is not clearly faster, such as one without AMX; "
                             "timed at start-up, the choice logged)")
    parser.add_argument("--grace-s", type=float, default=5.0,
                        help="seconds in-flight requests get to finish on shutdown")
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        parser.error("--tls-client-ca needs TLS: give --tls-cert and --tls-key too")
    limits = Limits()
    for text in args.limit:
        name, _, value = text.partition("=")
        kind = next((f.type for f in fields(Limits) if f.name == name), None)
        if kind is None or not value:
            parser.error(f"--limit {text}: give NAME=VALUE with NAME one of "
                         f"{', '.join(f.name for f in fields(Limits))}")
        try:
            number: Any = float(value) if kind == "float" else int(value)
        except ValueError:
            parser.error(f"--limit {text}: {value!r} is not a number")
        limits = replace(limits, **{name: number})
    try:
        token, device_tokens = read_token_table(args.token_file)
    except TokenError as error:
        parser.error(str(error))
    problem = plaintext_token_problem([host_of(args.address)],
                                      token or next(iter(device_tokens), None),
                                      bool(args.tls_cert), args.insecure)
    if problem:
        parser.error(problem)
    checkpoints = tuple(checkpoint_for(m) for m in args.model) + tuple(args.checkpoint)
    options = ServerOptions(
        address=args.address, checkpoints=checkpoints, max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, token=token,
        device_tokens=device_tokens,
        tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=args.tls_client_ca,
        load_pub=args.load_pub,
        torch_threads=args.threads, precision=args.precision, metrics_port=args.metrics_port,
        worker_stall_s=args.worker_stall_s,
        metrics_address=args.metrics_address, limits=limits)
    return options, args.grace_s


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    options, grace_s = parse_args(argv)
    try:
        server = EdgeServer(options).start()
    except (CheckpointError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stopper = threading.Thread(target=server.stop, args=(grace_s,), name="stop")

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stopper.ident is None:  # not started yet
            logging.info("signal %d: finishing in-flight requests (up to %.0f s)", signum,
                         grace_s)
            stopper.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    feed = f", load feed on {server.publisher.address}" if server.publisher else ""
    if server.metrics_port is not None:
        feed += f", metrics on :{server.metrics_port}/metrics"
    print(f"serving {', '.join(server.models.ids)} on port {server.port}{feed}", flush=True)
    server.wait()  # returns once stop() has finished
    if stopper.ident is not None:
        stopper.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
