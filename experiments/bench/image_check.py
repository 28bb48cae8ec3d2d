"""Run the built edge-server image and check it end to end; prints one JSON object.

    podman run splitnet-edge (host network, a free port) ─► health answers SERVING
      ─► an inference of the small model answers, equal to the same input run here
      ─► podman stop (SIGTERM) ─► the server drains and exits 0
    plus what the image is: its size, the user it runs as, whether a compiler is in it.

Where no OCI runtime can start a container (crun refuses hosts with hybrid cgroups, and
some sandboxes forbid setrlimit), the image's own file system is run instead: mounted with
``podman image mount`` and entered with chroot as the image's user, the entrypoint and
environment taken from the image. The report says which way it ran.

Usage: ``python -m experiments.bench.image_check [--image splitnet-edge:latest]`` (after
``make image``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from splitnet_proto.messages import MODEL_ID_METADATA, InferReply, InferRequest
from splitnet_proto.v1 import inference_pb2_grpc as pb_grpc

from experiments.bench.edge import _free_port
from splitnet import codec
from splitnet.config import Config
from splitnet.data.eval_sets import stream_images
from splitnet.preprocess import images_to_input
from splitnet.zoo import SMALL_MODEL, checkpoint_for, load_pretrained


def _podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check)


def _chroot_entrypoint(image: str, info: dict[str, Any],
                       args: tuple[str, ...]) -> subprocess.Popen[str]:
    """The image's entrypoint in its own file system, as its user, with its environment."""
    root = _podman("image", "mount", image).stdout.strip()
    config = info["Config"]
    user = config.get("User") or "root"
    uid = subprocess.run(["chroot", root, "id", "-u", user], capture_output=True, text=True,
                         check=True).stdout.strip()
    env = ["/usr/bin/env", "-i", *config.get("Env", [])]
    workdir = config.get("WorkingDir") or "/"
    command = " ".join(shlex.quote(a) for a in [*env, *config["Entrypoint"], *args])
    return subprocess.Popen(["chroot", f"--userspec={uid}:{uid}", root, "/bin/sh", "-c",
                             f"cd {workdir} && exec {command}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def check(image: str) -> dict[str, Any]:
    """Long because: the image's checks in order (health, inference, user, compiler, SIGTERM),
    each a few lines."""
    info = json.loads(_podman("image", "inspect", image).stdout)[0]
    root = Path(_podman("image", "mount", image).stdout.strip())
    compilers = sorted(str(p.relative_to(root)) for folder in ("usr/bin", "usr/local/bin")
                       for name in ("gcc", "cc", "g++", "c++", "clang")
                       if (p := root / folder / name).exists())
    port, metrics = _free_port(), _free_port()
    name = f"splitnet-check-{port}"
    args = ("--address", f"127.0.0.1:{port}", "--metrics-port", str(metrics),
            "--model", SMALL_MODEL)
    started = time.monotonic()
    result: dict[str, Any] = {"image": image, "size_mb": round(info["Size"] / 2**20, 1),
                              "user": info["Config"].get("User"), "compilers": compilers}
    launched = _podman("run", "--detach", "--rm", "--name", name, "--network", "host",
                       image, *args, check=False)
    chrooted: subprocess.Popen[str] | None = None
    if launched.returncode == 0:
        result["ran_with"] = "podman run"
    else:  # no OCI runtime here: run the image's file system with chroot, as its user
        result["ran_with"] = "chroot into the image's file system (podman run: " + \
            launched.stderr.strip().splitlines()[-1] + ")"
        chrooted = _chroot_entrypoint(image, info, args)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        health = health_pb2_grpc.HealthStub(channel)
        status = None
        while time.monotonic() - started < 120:
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                break
            except grpc.RpcError:
                time.sleep(0.5)
        result["serving_after_s"] = round(time.monotonic() - started, 1)
        result["health"] = health_pb2.HealthCheckResponse.ServingStatus.Name(status or 0)
        loaded = load_pretrained(checkpoint_for(SMALL_MODEL))
        config = Config(split=2, width=4, bits=4)
        x = images_to_input(stream_images(SMALL_MODEL).images[:1])
        with torch.no_grad():
            head = loaded.model.forward_head(x, config)
            expected = int(loaded.model(x, config).argmax())
        assert head.code is not None
        reply = InferReply.from_message(pb_grpc.EdgeInferenceStub(channel).Infer(
            InferRequest(1, config, codec.encode(head.code)).to_message(), timeout=30,
            metadata=((MODEL_ID_METADATA, loaded.model_id),)))
        result["inference"] = {"label": reply.label, "expected": expected,
                               "equal": reply.label == expected and reply.error is None}
        channel.close()
    finally:
        stopping = time.monotonic()
        if chrooted is None:
            _podman("stop", "--time", "15", name, check=False)  # SIGTERM, then SIGKILL
        else:
            chrooted.terminate()  # SIGTERM, as a container stop sends
            try:
                result["exit_code"] = chrooted.wait(timeout=15)
            except subprocess.TimeoutExpired:
                chrooted.kill()
                result["exit_code"] = "killed after 15 s"
        result["stop_seconds"] = round(time.monotonic() - stopping, 1)
    result["ok"] = (result.get("health") == "SERVING" and result["inference"]["equal"]
                    and result["user"] not in (None, "", "root", "0") and not compilers
                    and result["stop_seconds"] < 15 and result.get("exit_code", 0) == 0)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.bench.image_check",
        description="Run the edge-server image (podman): it must answer health, answer an "
                    "inference like this machine does, run as a non-root user with no "
                    "compiler inside, and stop cleanly on SIGTERM.")
    parser.add_argument("--image", default="splitnet-edge:latest")
    args = parser.parse_args(argv)
    if shutil.which("podman") is None:
        parser.error("podman is not installed: run `make image` first (it installs it)")
    result = check(args.image)
    print(json.dumps(result, indent=1))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
