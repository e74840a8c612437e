"""`python -m model.serve.infer` on real small videos made here (face photo + espeak speech)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from model.checkpoint.loading import build_tiny
from tests.media import make_clip
from tests.parallel import two_at_a_time

REPO = Path(__file__).resolve().parents[1]

# Token counts of the tiny preset, worked out by hand (not with model.net.tokens, which
# computes them for the code under test):
#   visual: 56 px / 14 px patches = 4×4 patches, pooled 2×2 → 4 per frame;
#           8 frames × 4 + 1 newline token = 33
#   face:   fused map pooled to 2×2 → 4 per frame; 8 frames × 4 = 32
#   audio:  samples / 160 (10 ms mel hop) / 2 (Whisper conv stride) / 3 (pool stride), ceil:
#           3 s = 48000 → 300 mel frames → 150 states → 50 tokens;
#           absent track = 4 s of zeros: 64000 → 400 → 200 → ceil(66.7) = 67
TINY_SHAPE = dict(frames=8, image_size=56, patch_size=14, face_pool=2, audio_pool_stride=3, absent_audio_s=4.0)
TINY_TOKENS = {"visual": 33, "face": 32, "audio_3s": 50, "audio_absent": 67}


def tiny_shape(config) -> dict:
    """The config values TINY_TOKENS was worked out from (so a preset change is named)."""
    return dict(frames=config.num_frames, image_size=config.vision_config.image_size,
                patch_size=config.vision_config.patch_size, face_pool=config.face_config.pool_size,
                audio_pool_stride=config.audio_pool_stride, absent_audio_s=config.absent_audio_seconds)


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
    assert tiny_shape(config) == TINY_SHAPE
    assert result["tokens"]["visual"] == TINY_TOKENS["visual"]
    assert result["tokens"]["face"] == TINY_TOKENS["face"]
    assert result["tokens"]["audio"] == TINY_TOKENS["audio_3s"]
    assert 0 < result["tokens"]["text"] < 100 and result["tokens"]["generated"] == 5
    assert result["face"] == "present" and result["face_frames"] >= 1  # the photo's face is found
    assert isinstance(result["text"], str) and result["seconds"] > 0


def test_infer_without_audio_says_so(assets):
    """A video without audio is analysed from the picture alone (as live.run and the
    File tab do) and the output says audio was missing, in JSON and in plain text."""
    root, config = assets
    args = ["--model", str(root / "tiny"), "--video", str(root / "silent.mp4"), "--max-new-tokens", "2"]
    runs = two_at_a_time(infer, {
        "json": (*args, "--json", "--no-faces"), "text": (*args, "--no-faces"),
        "no-audio": ("--model", str(root / "tiny"), "--video", str(root / "clip.mp4"), "--json", "--no-audio",
                     "--no-faces", "--max-new-tokens", "2")})
    out = runs["json"]
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["audio"] == "absent" and result["face"] == "absent"
    assert result["notes"] == ["silent.mp4 has no audio: analysed from the picture alone"]
    assert "note: silent.mp4 has no audio" in out.stderr
    assert tiny_shape(config) == TINY_SHAPE
    assert result["tokens"]["audio"] == TINY_TOKENS["audio_absent"]
    out = runs["text"]  # plain text
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert "no audio (picture alone)" in last and "None" not in last, last
    # --no-audio leaves a present track out, and says so
    out = runs["no-audio"]
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["audio"] == "absent" and "--no-audio" in result["notes"][0]


def test_summary_line_never_prints_none():
    from model.serve.infer import summary_line

    line = summary_line({"label": None, "labels": [], "audio": "present", "seconds": 1.5})
    assert line == "no label  no open-vocabulary words  (1.5 s)"
    line = summary_line({"label": "happy", "labels": ["glad", "bright"], "audio": "absent", "seconds": 2})
    assert line == "label: happy  words: glad, bright  no audio (picture alone)  (2 s)"


@pytest.mark.parametrize("video, message", [("missing.mp4", "no such file"), ("notes.mp4", "cannot read video")])
def test_bad_video_is_one_line_error(assets, video, message):
    root, _ = assets
    out = infer("--model", str(root / "tiny"), "--video", str(root / video))
    assert out.returncode == 2  # live.contract.cli.EXIT_USAGE
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in out.stderr


def test_missing_model_is_one_line_error(assets):
    root, _ = assets
    out = infer("--model", str(root / "nothing"), "--video", str(root / "clip.mp4"))
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [  # live.contract.cli.EXIT_USAGE
        f"error: no Omni-Emotion checkpoint at {root / 'nothing'} (config.json missing)"
    ]
