"""Regenerate the committed protobuf/gRPC modules from ``proto/``, with the pinned generator.

    proto/splitnet_proto/v1/inference.proto ──protoc (grpcio-tools==1.66.2)──►
        proto/splitnet_proto/v1/inference_pb2.py, inference_pb2.pyi, inference_pb2_grpc.py

The Python package is ``splitnet_proto`` (installed from ``proto/``): the generated modules
import each other by the proto file's path (``from splitnet_proto.v1 import inference_pb2``),
while the service keeps its protobuf name (``package splitnet.v1``) on the wire. The generator
is pinned to
the oldest runtime we support: code from a newer generator refuses to run on an older
grpcio/protobuf, such as the ones a Raspberry Pi's distribution ships.

The generator is installed apart from the project's environment, so that its own
protobuf pin does not hold the runtime back (``make setup`` does this)::

    pip install --no-deps --target .venv/generator grpcio-tools==1.66.2

Usage:
    python proto/generate.py           write the modules
    python proto/generate.py --check   exit 1 if the committed modules differ from a fresh run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

GRPCIO_TOOLS_VERSION = "1.66.2"
ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT_PACKAGE = PROTO_ROOT / "splitnet_proto" / "v1"
PROTOS = ["splitnet_proto/v1/inference.proto"]
GENERATOR_DIR = ROOT / ".venv" / "generator"
GENERATED = ["inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py"]


def generate(out_root: Path) -> None:
    install = (f"pip install --no-deps --target {GENERATOR_DIR.relative_to(ROOT)} "
               f"grpcio-tools=={GRPCIO_TOOLS_VERSION}")
    if GENERATOR_DIR.is_dir():
        sys.path.insert(0, str(GENERATOR_DIR))
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError:
        sys.exit(f"grpcio-tools is missing: {install}")
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        found = distribution("grpcio-tools").version
    except PackageNotFoundError:
        found = "unknown"
    if found != GRPCIO_TOOLS_VERSION:
        sys.exit(f"grpcio-tools {found} is installed; the generator is pinned "
                 f"to {GRPCIO_TOOLS_VERSION}: {install}")
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out_root}",
            f"--pyi_out={out_root}", f"--grpc_python_out={out_root}", *PROTOS]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare a fresh generation with the committed modules")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / "splitnet_proto" / "v1"
        if args.check:
            stale = [name for name in GENERATED
                     if not (OUT_PACKAGE / name).is_file()
                     or (OUT_PACKAGE / name).read_bytes() != (fresh / name).read_bytes()]
            if stale:
                print(f"generated modules are stale: {', '.join(stale)}; "
                      "run 'python proto/generate.py' and commit the result", file=sys.stderr)
                return 1
            print("generated modules are up to date")
            return 0
        OUT_PACKAGE.mkdir(parents=True, exist_ok=True)
        for name in GENERATED:
            (OUT_PACKAGE / name).write_bytes((fresh / name).read_bytes())
        init = OUT_PACKAGE / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated protobuf/gRPC modules (see proto/generate.py)."""\n')
    print(f"wrote {', '.join(GENERATED)} to {OUT_PACKAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
