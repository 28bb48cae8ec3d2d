"""The house rules, checked: which package imports which, that the core needs no gRPC, how
long a function may grow, and that comments say what the code does now."""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("splitnet", "device_client", "edge_server", "experiments", "proto/splitnet_proto")
GENERATED = ("proto/splitnet_proto/v1",)
MAX_FUNCTION_LINES = 60


def _sources(*packages: str) -> list[Path]:
    return [p for package in packages for p in sorted((ROOT / package).rglob("*.py"))
            if not any(str(p.relative_to(ROOT)).startswith(g) for g in GENERATED)]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package, forbidden", [
    ("device_client", ("edge_server", "experiments")),
    ("edge_server", ("device_client", "experiments")),
    ("splitnet", ("device_client", "edge_server", "experiments", "splitnet_proto", "grpc",
                  "zmq", "google.protobuf")),
])
def test_the_runtime_packages_do_not_reach_across(package, forbidden):
    offenders = {f"{path.relative_to(ROOT)}: {name}" for path in _sources(package)
                 for name in _imports(path)
                 if any(name == f or name.startswith(f + ".") for f in forbidden)}
    assert not offenders


def test_splitnet_imports_without_grpc():
    """The core in an environment without gRPC, protobuf or ZMQ (an import of any of them
    fails, as it would where they are not installed): its modules all import."""
    blocked = ("grpc", "google", "zmq", "splitnet_proto", "grpc_health")
    code = (
        "import importlib, importlib.abc, pkgutil, sys\n"
        f"BLOCKED = {blocked!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ImportError(f'{name} is not installed here')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import splitnet\n"
        "modules = [m.name for m in pkgutil.walk_packages(splitnet.__path__, 'splitnet.')\n"
        "           if not m.name.endswith('__main__')]\n"
        "for name in modules:\n"
        "    importlib.import_module(name)\n"
        "print(len(modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout) > 20


def test_no_function_is_long_without_a_stated_reason():
    long = []
    for path in _sources(*PACKAGES):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_FUNCTION_LINES and \
                        "Long because" not in (ast.get_docstring(node) or ""):
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} "
                                f"({lines} lines)")
    assert not long


# a commit hash (seven or more hex digits with at least one letter and one digit), a date,
# or narration of what the code did before
HISTORY = [re.compile(p, re.I) for p in (
    r"(?<![\w/.-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}(?![\w/.-])",
    r"\b20\d\d-\d\d-\d\d\b",  # a date: when something happened is history
    r"\bused to\b", r"\bwas .{0,40}\bnow\b", r"\bas before\b", r"\bused before\b",
    r"\bpreviously\b", r"\bissues? #\d", r"\bdesign brief\b", r"\bthe old code\b",
    r"\bformerly\b", r"\bstop \d+\b")]


def _commentary(path: Path) -> list[tuple[int, str]]:
    """Every comment and docstring of a file, with its line."""
    text = path.read_text()
    out = [(tok.start[0], tok.string) for tok in
           tokenize.generate_tokens(io.StringIO(text).readline)
           if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                out.append((getattr(node, "lineno", 1), doc))
    return out


def test_comments_say_what_the_code_does_now():
    hits = [f"{path.relative_to(ROOT)}:{line}: {match.group(0)!r}"
            for path in _sources(*PACKAGES, "tests")
            for line, text in _commentary(path) for pattern in HISTORY
            if (match := pattern.search(text))]
    assert not hits, "\n".join(hits)
