"""`python -m live.run --model DIR [--plan NAME]`: headless study runs with Omni-Emotion."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.media import cached_clip

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return tiny_checkpoint


def run(*args):
    return subprocess.run([sys.executable, "-m", "live.run", *args, "--no-progress"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_model_with_a_4bit_plan_analyses_every_window(tiny, tmp_path):
    clip = cached_clip("study", seconds=5.0)
    out = run(clip["path"], "--out", str(tmp_path), "--model", str(tiny), "--plan", "nf4", "--every-window")
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    windows = [json.loads(line) for line in (tmp_path / "windows.jsonl").read_text().splitlines()]
    assert stats["windows"] == len(windows) >= 2 and stats["analyser_errors"] == 0
    analysed = [w for w in windows if w["analysed"]]
    assert analysed and all({"label", "labels", "explanation", "tokens", "analyse_s"} <= set(w) for w in analysed)
    assert all(w["tokens"]["face"] > 0 and w["model"] == tiny.name for w in analysed)


def test_bad_plan_is_a_one_line_error(tiny, tmp_path):
    clip = cached_clip("study", seconds=5.0)
    out = run(clip["path"], "--out", str(tmp_path), "--model", str(tiny), "--plan", "nf9")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "unknown plan 'nf9'; valid plans: fp16, int8, nf4, nf4-dq, edge-8gb" in out.stderr
