"""`python -m model.evaluate predict` end to end: tiny model, real clips, real decoding."""
from __future__ import annotations

import json

from model.checkpoint.loading import build_tiny
from model.net.answers import parse_answer
from model.data.manifest import make_sample, write_manifest
from model.net.templates import CLASSIFICATION_QUESTIONS
from model.evaluate.cli import add_parsed_labels, main as evaluate_main
from tests.media import make_clip

OPTIONS = ["happy", "sad", "neutral"]
CLS_PROMPT = "As an emotional recognition expert, what is the primary emotion? happy, sad, neutral."
ASR_PROMPT = "Give me the transcription of the speech you heard."


def test_predict_writes_one_parsed_line_per_sample(tmp_path, capsys):
    build_tiny(tmp_path / "tiny")
    make_clip(tmp_path / "a.mp4", seconds=2.0)
    make_clip(tmp_path / "b.mp4", seconds=1.5, audio=False)
    (tmp_path / "c.wav").write_bytes((tmp_path / "a.mp4").read_bytes())  # audio-only via the mp4's track
    samples = [
        make_sample("a", "emotion_cls", CLS_PROMPT, "happy.", "a.mp4", options=OPTIONS),
        make_sample("b", "emotion_cls", CLS_PROMPT, "sad.", "b.mp4", options=OPTIONS),
        make_sample("c", "asr", ASR_PROMPT, "hello", None, audio="c.wav"),
    ]
    write_manifest(samples, tmp_path / "m.jsonl")
    rc = evaluate_main(["predict", "--model", str(tmp_path / "tiny"), "--data", str(tmp_path / "m.jsonl"),
                        "--out", str(tmp_path / "pred.jsonl"), "--batch-size", "2"])
    assert rc == 0, capsys.readouterr().err
    rows = [json.loads(line) for line in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    # Each row's label/labels are its own text parsed with its sample's options (a, b: the
    # class list; c, an ASR sample: none, so open vocabulary). A random tiny model rarely
    # names an option, so the wiring itself is pinned with written answers below.
    for r, options in zip(rows, (OPTIONS, OPTIONS, None)):
        assert set(r) == {"id", "text", "label", "labels"} and r["text"].strip()
        expected = parse_answer(r["text"], options)
        assert (r["label"], r["labels"]) == (expected.label, expected.labels), r["id"]


def test_parsed_labels_use_each_samples_options():
    """add_parsed_labels (predict's second step) on answers whose labels are known."""
    samples = [
        make_sample("a", "emotion_cls", CLS_PROMPT, "happy.", "a.mp4", options=OPTIONS),
        # no "options" key: the list comes from the phase-2 prompt itself
        make_sample("b", "emotion_cls", f"{CLASSIFICATION_QUESTIONS[1]} angry, fear.", "fear.", "b.mp4"),
        make_sample("c", "asr", ASR_PROMPT, "hello", None, audio="c.wav"),
        make_sample("d", "emotion_cls", CLS_PROMPT, "sad.", "d.mp4", options=OPTIONS),
    ]
    rows = [
        {"id": "a", "text": "The person looks rather sad, not happy."},  # first option named: sad
        {"id": "b", "text": "Fearful."},  # a word form of the option "fear"
        {"id": "c", "text": "Open-vocabulary labels: calm, tired."},  # no options: first label
        {"id": "d", "text": "A person sits by a window."},  # names no option: None, not a guess
    ]
    got = {r["id"]: (r["label"], r["labels"]) for r in add_parsed_labels(rows, samples)}
    assert got == {
        "a": ("sad", []),
        "b": ("fear", ["fearful"]),
        "c": ("calm", ["calm", "tired"]),
        "d": (None, []),
    }
