"""A short run of every fuzz target (the benchmark is ``python -m tests.fuzz``), and the
inputs the fuzzer once crashed on, kept as regressions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")
ROOT = Path(__file__).resolve().parents[1]


def test_every_target_runs_its_inputs_without_a_crash(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "tests.fuzz", "--runs", "3000", "--json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    report = json.loads(done.stdout)
    for target in report["targets"]:
        assert not target["crashed"], target["log_tail"]
        assert target["executions"] == 3000 and target["edges_covered"] > 0
    assert {t["target"] for t in report["targets"]} == {
        "codec", "entropy", "request", "reply", "image", "scenario", "trace"}


def test_a_trace_name_too_long_for_the_file_system_is_a_scenario_error():
    from experiments.scenario import ScenarioError, parse_scenario

    with pytest.raises(ScenarioError, match="not found"):
        parse_scenario(f'[scenario]\ntrace = "{"x" * 5000}"\n', "long")


def test_a_raw_image_whose_zstd_frame_declares_terabytes_is_refused():
    import zstandard

    from splitnet.codec import PayloadError
    from splitnet.input_codecs import decode_image

    honest = zstandard.ZstdCompressor(write_content_size=True).compress(bytes(784))
    assert honest[4] == 0x60  # single segment, a 2-byte content size: 784 − 256 = 528
    # the same blocks behind a header that declares 2**40 bytes (an 8-byte content size)
    frame = honest[:4] + b"\xe0" + (1 << 40).to_bytes(8, "little") + honest[7:]
    assert zstandard.get_frame_parameters(frame).content_size == 1 << 40
    with pytest.raises(PayloadError, match="declares"):
        decode_image(b"\x1c\x00\x1c\x00" + bytes(frame), "raw-zstd", (28, 28))
