"""`python -m model.serve.infer` on real small videos made here (face photo + espeak speech)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from model.net import tokens
from model.checkpoint.loading import build_tiny
from tests.media import make_clip

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    model, _ = build_tiny(root / "tiny")
    make_clip(root / "clip.mp4", seconds=3.0)
    make_clip(root / "silent.mp4", seconds=2.0, audio=False)
    (root / "notes.mp4").write_text("not a video")
    return root, model.config


def infer(*args):
    return subprocess.run([sys.executable, "-m", "model.serve.infer", *args], cwd=REPO, capture_output=True, text=True)


def test_infer_json_reports_token_counts(assets):
    root, config = assets
    out = infer("--model", str(root / "tiny"), "--video", str(root / "clip.mp4"), "--json", "--max-new-tokens", "5")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["tokens"]["visual"] == tokens.visual_token_count(config)
    assert result["tokens"]["face"] == tokens.face_token_count(config)
    assert result["tokens"]["audio"] == tokens.audio_token_count(config, 3 * 16000)
    assert 0 < result["tokens"]["text"] < 100 and result["tokens"]["generated"] == 5
    assert result["face"] == "present" and result["face_frames"] >= 1  # the photo's face is found
    assert isinstance(result["text"], str) and result["seconds"] > 0


def test_infer_without_audio_needs_the_flag(assets):
    root, config = assets
    args = ["--model", str(root / "tiny"), "--video", str(root / "silent.mp4"), "--json", "--max-new-tokens", "2"]
    out = infer(*args)
    assert out.returncode == 1
    assert out.stderr.strip() == f"error: {root / 'silent.mp4'} has no audio stream (pass --no-audio to analyse the picture alone)"
    out = infer(*args, "--no-audio", "--no-faces")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["audio"] == "absent" and result["face"] == "absent"
    assert result["tokens"]["audio"] == tokens.audio_token_count(config, None)


@pytest.mark.parametrize("video, message", [("missing.mp4", "no such file"), ("notes.mp4", "cannot read video")])
def test_bad_video_is_one_line_error(assets, video, message):
    root, _ = assets
    out = infer("--model", str(root / "tiny"), "--video", str(root / video))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in out.stderr


def test_missing_model_is_one_line_error(assets):
    root, _ = assets
    out = infer("--model", str(root / "nothing"), "--video", str(root / "clip.mp4"))
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        f"error: no Omni-Emotion checkpoint at {root / 'nothing'} (config.json missing)"
    ]
