"""``make pi-check``: the device client installed and run on a Debian 12 arm64 userland.

Raspberry Pi OS 12 is Debian bookworm on arm64 with Python 3.11. This builds that userland
with Debian's own tools and runs the device there, under qemu-user emulation:

    mmdebstrap --architectures=arm64 bookworm ─► rootfs (python3, venv)     cached in
                                                                            ~/.cache/splitnet/pi
    binfmt_misc + qemu-aarch64-static ─► chroot rootfs: aarch64 programs run as they would
                                         (shown a Pi 4's /proc/cpuinfo: see PI4_CPUINFO)
    host: pip wheel . ─► splitnet-*.whl ─► rootfs /opt/splitnet/wheels
    chroot: python3 -m venv ─► pip install torch==TORCH ─► pip install 'splitnet[device]'
    host: edge server on 127.0.0.1 (qemu-user shares the host's network) ─┐
    chroot: python -m device_client --edge 127.0.0.1:PORT --images ... ◄──┘ (split, int8 head)
    chroot: local/int8 (qnnpack) labels ─┐
    host: local fp32 labels (x86)       ─┴─► agreement on a fixed image set (target ≥ 95 %)

It prints one JSON object (also written to runs/pi-check.json). It is slow under emulation:
a check people run, not part of ``make test``.

Why torch 2.10.0 there: PyPI's aarch64 wheels of torch 2.11 and later are CUDA builds
whose CUDA packages PyPI does not carry for aarch64 (``pip install torch==2.13.0`` on an
arm64 Debian fails resolving nvidia-cudnn-cu13); 2.10.0 is the newest CPU-only aarch64
wheel on PyPI, and the project's ``torch>=2.3,<=2.13.0`` admits it. On a Pi with access to
PyTorch's own index, ``--index-url https://download.pytorch.org/whl/cpu`` serves 2.13.0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from splitnet.data import DatasetNotFoundError

PI_TORCH = "2.10.0"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "splitnet" / "pi"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = "python3,python3-venv,python3-pip,ca-certificates,libgomp1"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
BINFMT_CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")
VENV = "/opt/splitnet/venv"
SPLIT_CONFIG = "split2/w4/b4/int8"  # the int8 head on the device, the tail on the edge


class PiCheckError(RuntimeError):
    """A step that cannot run here; the message says which and what to do."""


def log(message: str) -> None:
    print(f"[pi-check {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout)[-2000:]
        raise PiCheckError(f"{' '.join(command[:6])} ... failed ({result.returncode}):\n{tail}")
    return result


def ensure_binfmt() -> str:
    """aarch64 programs run through qemu: register qemu-user-static with binfmt_misc (the
    'F' flag loads the interpreter now, so it works inside the chroot too)."""
    if shutil.which("qemu-aarch64-static") is None:
        raise PiCheckError("qemu-aarch64-static is missing: apt-get install qemu-user-static")
    if not (BINFMT / "register").exists():
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)],
                           check=True, capture_output=True)
    if (BINFMT / "qemu-aarch64").exists():
        return "binfmt_misc: qemu-aarch64 already registered"
    if not (BINFMT / "register").exists():
        raise PiCheckError(f"binfmt_misc is not mounted at {BINFMT} and cannot be (not root, "
                           "or a container without it): aarch64 programs cannot run here")
    line = next(ln for ln in BINFMT_CONF.read_text().splitlines()
                if ln and not ln.startswith("#"))
    try:
        (BINFMT / "register").write_text(line)
    except OSError as error:
        raise PiCheckError(f"registering qemu-aarch64 with binfmt_misc failed: {error}") \
            from None
    return "binfmt_misc: qemu-aarch64 registered now"


def ensure_rootfs(root: Path) -> str:
    """Debian 12 arm64 with Python 3.11, built once by mmdebstrap and reused."""
    if (root / "usr/bin/python3").exists():
        return f"rootfs reused: {root}"
    if shutil.which("mmdebstrap") is None:
        raise PiCheckError("mmdebstrap is missing: apt-get install mmdebstrap")
    partial = root.with_suffix(".tmp")
    shutil.rmtree(partial, ignore_errors=True)
    run(["mmdebstrap", "--architectures=arm64", "--variant=apt", f"--include={PACKAGES}",
         "bookworm", str(partial), MIRROR])
    partial.rename(root)
    return f"rootfs built: {root}"


# A Raspberry Pi 4's /proc/cpuinfo (Cortex-A72, part 0xd08). qemu-user (7.2, Debian 12)
# passes the host's x86 /proc/cpuinfo through to aarch64 programs; PyTorch's cpuinfo cannot
# parse it and QNNPACK refuses to start ("failed to initialize QNNPACK"). The chroot is
# shown this file instead, as a Pi would show its own.
PI4_CPUINFO = "".join(
    f"processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n"
    "CPU revision\t: 3\n\n" for n in range(4)) + \
    "Hardware\t: BCM2835\nRevision\t: c03114\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"


@contextlib.contextmanager
def mounted(root: Path) -> Iterator[None]:
    """/proc (with a Pi 4's cpuinfo), /sys and /dev inside the rootfs while the chroot runs."""
    cpuinfo = CACHE / "cpuinfo-rpi4"
    cpuinfo.write_text(PI4_CPUINFO)
    points = [(["-t", "proc", "proc"], root / "proc"), (["-t", "sysfs", "sysfs"], root / "sys"),
              (["--bind", "/dev"], root / "dev"), (["--bind", str(cpuinfo)],
                                                   root / "proc/cpuinfo")]
    done: list[Path] = []
    try:
        for how, where in points:
            if where.name != "cpuinfo":
                where.mkdir(exist_ok=True)
            run(["mount", *how, str(where)])
            done.append(where)
        yield
    finally:
        for where in reversed(done):
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def in_root(root: Path, script: str, timeout: float = 3600) -> str:
    """Run a shell script in the arm64 rootfs; its stdout."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
           "PIP_CERT": "/etc/ssl/certs/host-ca.crt", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PIP_DEFAULT_TIMEOUT": "180"}
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"  # resolved here: env has no sbin
    return run([chroot, str(root), "/bin/sh", "-ec", script], env=env, timeout=timeout).stdout


def build_wheel(project: Path, into: Path) -> Path:
    """splitnet's wheel, built on the host (pure Python: the same on every architecture)."""
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(into), str(project)])
    return next(into.glob("splitnet-*.whl"))


def write_frames(folder: Path, n: int) -> list[Path]:
    """The first ``n`` eval images in the stream order, as PNG (lossless: both sides decode
    the same pixels)."""
    from PIL import Image

    from splitnet.data.eval_sets import default_cache_dir, stream_images

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    data = stream_images("resnet18_imagenette", cache_dir=default_cache_dir()).head(n)
    paths = []
    for index, image in enumerate(data.images):
        path = folder / f"{index:03d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def host_labels(paths: list[Path], int8: bool) -> list[int]:
    """Labels on this (x86) host, the whole network on the device side, fp32 or int8."""
    from device_client.client import DeviceClient
    from device_client.options import DeviceOptions, PolicyOptions
    from splitnet.config import Config
    from splitnet.zoo import checkpoint_for

    with DeviceClient(checkpoint_for("resnet18_imagenette"), None,
                      policy=PolicyOptions("fixed-paper", fixed_config=Config.local(int8=int8)),
                      device=DeviceOptions(battery="1.0")) as client:
        return [client.infer(path).label for path in paths]


def du_mb(path: Path) -> float:
    out = run(["du", "-sm", str(path)]).stdout
    return float(out.split()[0])


def main(argv: list[str] | None = None) -> int:
    """Long because: the check's steps in order (userland, install, edge, run, compare), each
    reporting what it found."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.bench.pi_check",
        description="Install and run the device client on a Debian 12 arm64 userland under "
                    "qemu-user emulation (as root): build the rootfs with mmdebstrap (cached), "
                    f"pip install torch=={PI_TORCH} and splitnet[device] into a venv there, "
                    "run python -m device_client against an edge server on this host, and "
                    "check the int8 (qnnpack) model there against fp32 here. Prints JSON.",
        epilog="Slow: about 50 minutes on a 2-core host, 45 of them the emulated int8 "
               "network (about a minute a frame; --images 10 shortens it); the rootfs and "
               "the torch install are cached after the first run. Needs qemu-user-static "
               "and mmdebstrap (apt-get install qemu-user-static mmdebstrap).")
    parser.add_argument("--images", type=int, default=40,
                        help="the fixed image set for the agreement check "
                             "(default: %(default)s)")
    parser.add_argument("--device-images", type=int, default=6,
                        help="images through the edge in each device run "
                             "(default: %(default)s)")
    parser.add_argument("--fresh", action="store_true",
                        help="rebuild the rootfs and the venv from scratch")
    parser.add_argument("--out", type=Path, default=Path("runs/pi-check.json"))
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: mmdebstrap, chroot, mount and binfmt_misc need it")
    project = Path(__file__).resolve().parent.parent
    root = CACHE / "rootfs"
    if args.fresh:
        shutil.rmtree(root, ignore_errors=True)
    report: dict[str, Any] = {"torch_on_device": PI_TORCH, "steps": {}}
    started = time.monotonic()

    def step(name: str) -> contextlib.AbstractContextManager[None]:
        @contextlib.contextmanager
        def timed() -> Iterator[None]:
            log(name)
            t0 = time.monotonic()
            yield
            report["steps"][name] = round(time.monotonic() - t0, 1)
        return timed()

    try:
        with step("binfmt"):
            report["binfmt"] = ensure_binfmt()
        with step("rootfs"):
            report["rootfs"] = ensure_rootfs(root)
        report["userland"] = in_root(root, ". /etc/os-release; echo $PRETTY_NAME $(uname -m) "
                                           "$(python3 -V)").strip()
        with step("wheel"):
            wheel = build_wheel(project, root / "opt/splitnet/wheels")
        # pip in the rootfs reaches PyPI the way this host does: its resolver and its CAs
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        shutil.copy("/etc/ssl/certs/ca-certificates.crt", root / "etc/ssl/certs/host-ca.crt")
        try:
            frames = write_frames(root / "opt/splitnet/frames", args.images)
        except DatasetNotFoundError as error:
            raise PiCheckError(str(error)) from None
        with mounted(root):
            with step("venv + torch"):
                in_root(root, (f"rm -rf {VENV}; " if args.fresh else "")
                        + f"[ -x {VENV}/bin/python ] || python3 -m venv {VENV}; "
                        f"{VENV}/bin/pip install -q torch=={PI_TORCH}")
            with step("splitnet[device]"):
                in_root(root, f"{VENV}/bin/pip install -q --force-reinstall --no-deps "
                              f"/opt/splitnet/wheels/{wheel.name}; "
                              f"{VENV}/bin/pip install -q '/opt/splitnet/wheels/{wheel.name}"
                              "[device]'")
            site = next((root / VENV.lstrip("/")).glob("lib/python3*/site-packages"))
            venv_mb = du_mb(root / VENV.lstrip("/"))
            report["venv_mb"] = {"total": venv_mb,
                                 "without_torch": round(venv_mb - du_mb(site / "torch"), 1)}
            installed = in_root(root, f"{VENV}/bin/pip list --format=freeze").split()
            report["installed"] = installed
            names = {line.split("==")[0].lower() for line in installed}
            report["lean"] = not names & {"matplotlib", "grpcio-tools", "prometheus-client"}
            with step("import + engine"):
                report["engine"] = json.loads(in_root(root, (
                    f"cd /tmp; {VENV}/bin/python -c \"import json, platform, torch; "
                    "from splitnet.model.int8 import quantized_engine; "
                    "print(json.dumps({'machine': platform.machine(), "
                    "'torch': torch.__version__, 'engine': quantized_engine(), "
                    "'supported': torch.backends.quantized.supported_engines}))\"")))
            report["device_runs"] = device_runs(root, args.device_images)
            with step("int8 on arm64"):
                arm = arm_labels(root, len(frames))
        with step("fp32 and int8 on x86"):
            fp32 = host_labels(frames, int8=False)
            x86_int8 = host_labels(frames, int8=True)
        agree = sum(a == b for a, b in zip(arm, fp32, strict=True)) / len(frames)
        report["agreement"] = {
            "images": len(frames), "arm64_int8_vs_x86_fp32": agree,
            "x86_int8_vs_x86_fp32": sum(a == b for a, b in zip(x86_int8, fp32, strict=True))
            / len(frames), "target": 0.95, "met": agree >= 0.95}
    except PiCheckError as error:
        report["error"] = str(error)
        log(f"failed: {error}")
    report["minutes"] = round((time.monotonic() - started) / 60, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 1 if "error" in report or not report["agreement"]["met"] else 0


def device_runs(root: Path, n: int) -> dict[str, Any]:
    """``python -m device_client`` in the rootfs against an edge server on this host: the
    int8 head with the tail on the edge, and the adaptive policy."""
    from edge_server.server import EdgeServer, ServerOptions
    from splitnet.zoo import checkpoint_for

    server = EdgeServer(ServerOptions(address="127.0.0.1:0",
                                      checkpoints=(checkpoint_for("resnet18_imagenette"),)))
    server.start()
    runs: dict[str, Any] = {}
    try:
        for name, flags in (("split int8 head", f"--policy fixed --fixed-config {SPLIT_CONFIG}"),
                            ("adaptive", "--policy adaptive")):
            log(f"device run: {name}")
            t0 = time.monotonic()
            out = in_root(root, f"cd /tmp; {VENV}/bin/python -m device_client --edge "
                                f"127.0.0.1:{server.port} {flags} --images "
                                f"/opt/splitnet/frames --n {n} --battery 1.0 --json")
            summary = json.loads(out)
            summary["wall_s"] = round(time.monotonic() - t0, 1)
            runs[name] = summary
    finally:
        server.stop(1)
    return runs


def arm_labels(root: Path, n: int) -> list[int]:
    """The whole network in int8 on the arm64 userland (qnnpack), one label per frame."""
    with tempfile.TemporaryDirectory(dir=root / "tmp") as folder:
        records = Path(folder) / "records.jsonl"
        inside = "/" + str(records.relative_to(root))
        in_root(root, f"cd /tmp; {VENV}/bin/python -m device_client --policy fixed "
                      f"--fixed-config local/int8 --images /opt/splitnet/frames --n {n} "
                      f"--battery 1.0 --records {inside} --json > /dev/null")
        rows = [json.loads(line) for line in records.read_text().splitlines()]
    return [row["label"] for row in sorted(rows, key=lambda r: r["file"])]


if __name__ == "__main__":
    raise SystemExit(main())
