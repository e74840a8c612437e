"""`python -m model.evaluate predict` end to end: tiny model, real clips, real decoding."""
from __future__ import annotations

import json

from model.data.manifest import make_sample, write_manifest
from model.evaluate.cli import main as evaluate_main
from model.checkpoint.loading import build_tiny
from tests.media import make_clip


def test_predict_writes_one_parsed_line_per_sample(tmp_path, capsys):
    build_tiny(tmp_path / "tiny")
    make_clip(tmp_path / "a.mp4", seconds=2.0)
    make_clip(tmp_path / "b.mp4", seconds=1.5, audio=False)
    (tmp_path / "c.wav").write_bytes((tmp_path / "a.mp4").read_bytes())  # audio-only via the mp4's track
    prompt = "As an emotional recognition expert, what is the primary emotion? happy, sad, neutral."
    samples = [
        make_sample("a", "emotion_cls", prompt, "happy.", "a.mp4", options=["happy", "sad", "neutral"]),
        make_sample("b", "emotion_cls", prompt, "sad.", "b.mp4", options=["happy", "sad", "neutral"]),
        make_sample("c", "asr", "Give me the transcription of the speech you heard.", "hello", None, audio="c.wav"),
    ]
    write_manifest(samples, tmp_path / "m.jsonl")
    rc = evaluate_main(["predict", "--model", str(tmp_path / "tiny"), "--data", str(tmp_path / "m.jsonl"),
                        "--out", str(tmp_path / "pred.jsonl"), "--batch-size", "2"])
    assert rc == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    for r in rows:
        assert set(r) >= {"id", "text", "label", "labels"} and r["text"]
        assert r["label"] in (None, "happy", "sad", "neutral") or r["id"] == "c"
