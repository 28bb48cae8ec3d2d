"""The README and docs/ hold to what they promise: short, no history, every command runs,
every quoted results folder exists and every generated table matches it, and the library
example works against a real edge server."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import tables

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
# a hex word of 7+ characters holding both a digit and a letter: a commit hash
HASH = re.compile(r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
RESULTS = re.compile(r"results/[\w.-]*\w(?![\w<]|[.-][\w<])")


def test_readme_is_a_front_door() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    for path in DOCS:
        body = path.read_text()
        assert not HASH.findall(body), f"{path.name} quotes commit hashes: history is in git"
        assert not DATE.findall(body), f"{path.name} quotes dates: history is in docs/notes.md"
    for name in ("architecture", "methodology", "operations", "targets", "notes"):
        assert f"docs/{name}.md" in text


def test_quoted_results_folders_exist_and_tables_match_them() -> None:
    for path in DOCS:
        text = path.read_text()
        for folder in set(RESULTS.findall(text)):
            assert (ROOT / folder).exists(), f"{path.name} quotes {folder}, which is missing"
        fresh, stale = tables.refresh(text, ROOT)
        assert not stale, (f"{path.name}: tables differ from {stale}; run "
                           "python -m experiments.tables")
        assert fresh == text


def readme_commands() -> list[str]:
    """Every command the README gives: its sh blocks' lines and its table's commands."""
    text = README.read_text()
    commands = [line.split("#")[0].strip() for lang, body in FENCE.findall(text)
                if lang == "sh" for line in body.splitlines()]
    commands += re.findall(r"^\| `((?:python|make) [^`]*)`", text, re.M)
    return [c for c in commands if c and "<" not in c]


@pytest.mark.parametrize("command", readme_commands())
def test_every_readme_command_runs(command: str) -> None:
    """``make X``: the target exists and its recipe resolves (make -n). ``python -m X``:
    the module's --help works, so its name and import are right. Running each for real is
    the job of the tests of each area (and of CI's ``make test``)."""
    words = command.split()
    if words[0] == "make":
        run = subprocess.run(["make", "-n", words[1]], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
    else:
        assert words[:2] == ["python", "-m"], command
        run = subprocess.run([sys.executable, "-m", words[2], "--help"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"{command}: {run.stderr[-800:]}"


def test_readme_library_example_prints_a_class_name(tmp_path, monkeypatch) -> None:
    """The README's Python block, as written, against a real edge serving the camera model
    on loopback (only its address differs), on a real Imagenette photo."""
    from edge_server.server import EdgeServer, ServerOptions
    from splitnet.data.eval_sets import class_names
    from splitnet.data.imagenette import find_imagenette, list_image_folder
    from splitnet.zoo import DEFAULT_MODEL, checkpoint_for

    try:
        root = find_imagenette()
    except FileNotFoundError as error:
        pytest.skip(f"Imagenette is not on this machine: {error}")
    photo = list_image_folder(root / "val")[0][0][0]
    shutil.copy(photo, tmp_path / "photo.jpg")
    [example] = [body for lang, body in FENCE.findall(README.read_text()) if lang == "python"]
    assert len(example.strip().splitlines()) <= 5
    server = EdgeServer(ServerOptions(address="127.0.0.1:0",
                                      checkpoints=(checkpoint_for(DEFAULT_MODEL),))).start()
    try:
        monkeypatch.chdir(tmp_path)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(example.replace("127.0.0.1:50051", f"127.0.0.1:{server.port}"), {})
    finally:
        server.stop(1)
    class_name, where, _ = out.getvalue().split(maxsplit=2)
    assert class_name in class_names(DEFAULT_MODEL)
    assert where in ("device-exit", "edge", "local")
