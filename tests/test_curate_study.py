"""Study recordings as a data source: a session folder written by the real
``live.study_log.StudyLog`` (keep_media, ``write_window`` per window, as the app's live
tab does) → ``python -m model.data.curate study`` → a labelled manifest whose clips
decode, and which the SRE run (dry run) and the trainer's dataset read.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from live.contract.media import AUDIO_RATE
from live.sources import decode_audio, video_times
from live.study_log import StudyLog, read_jsonl
from live.window import file_window
from model.data.manifest import read_manifest
from tests.media import cached_clip, clip_frames
from tests.test_curate_hre import run_cli

WINDOW_S = 2.0  # s per recorded window




def _window(path: str, index: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """(record, frames (8, H, W, 3) uint8, audio (n,) float32 16 kHz) of the clip span
    [index, index + WINDOW_S] s, the way a live window records them."""
    start, end = float(index), float(index) + WINDOW_S
    span = file_window(path, start, end)
    audio = decode_audio(path)[int(start * AUDIO_RATE):int(end * AUDIO_RATE)]
    rec = {"index": index, "start": start, "end": end,
           "frame_times": [round(float(t), 3) for t in span.frame_times], "face_track": None,
           "speech_ratio": 0.5, "analysed": True, "reason": None, "label": "neutral",
           "labels": ["calm"], "explanation": "model output", "run": 1, "source": "live"}
    return rec, span.frames, audio.astype(np.float32)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """s1: window 4 (angry) logged before consent was given, then consent: windows 0
    (happy), 1 (no self-report), 2 (sad), 3 (sad, no media). s2: an older app's log
    with no consent field (one window, happy). s3: consent given (window 0, angry, with
    media), then withdrawn."""
    root = tmp_path_factory.mktemp("study") / "logs"
    clip = cached_clip("study", seconds=6.0, fps=10)["path"]
    saved = {}

    def record(log: StudyLog, index: int, extra: dict, media: bool = True) -> None:
        rec, frames, audio = _window(clip, index)
        if not media:
            log.write({**rec, **extra})
            return
        log.write_window({**rec, **extra}, frames, audio, AUDIO_RATE)
        saved[(log.session, index)] = (frames, audio)

    with StudyLog(root, "s1", "p01") as log:  # logging on, consent box not yet ticked
        record(log, 4, {"self_report": "angry"}, media=False)
    with StudyLog(root, "s1", "p01", keep_media=True, consent=True) as log:
        log.write({"event": "start"})  # not a window record
        record(log, 0, {"self_report": "Happy"})
        record(log, 1, {})
        record(log, 2, {"self_report": "sad", "consent": False})  # the log's consent, not the caller's
        record(log, 3, {"self_report": "sad"}, media=False)
    with StudyLog(root, "s2", "p02", keep_media=True, consent=True) as log:
        record(log, 0, {"self_report": "happy"})
    old = [{k: v for k, v in r.items() if k not in ("consent", "consent_at")} for r in read_jsonl(log.path)]
    log.path.write_text("".join(json.dumps(r) + "\n" for r in old))  # as an older app wrote it
    with StudyLog(root, "s3", "p03", keep_media=True, consent=True) as log:
        record(log, 0, {"self_report": "angry"})
        log.set_consent(False)  # withdrawn: the session is never used
        log.write({"event": "consent withdrawn"})
    return root, saved


def test_study_sessions_to_manifest(sessions, tmp_path, capsys):
    root, saved = sessions
    out = tmp_path / "data" / "study.jsonl"
    r = run_cli(capsys, "study", str(root), "--out", str(out))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    # only s1's log says yes (its window from before consent is skipped); s2 needs
    # --consented, s3 withdrew
    assert summary == {"sessions": 1, "samples": 2, "skipped": {
        "no_consent_sessions": 2, "no_consent_windows": 1, "unlabelled": 1, "no_media": 1}}
    assert "s2" in r.stderr and "s3" in r.stderr
    samples = read_manifest(out)
    assert [s["id"] for s in samples] == ["study/s1/001_00000", "study/s1/001_00002"]
    assert [s["label"] for s in samples] == ["happy", "sad"]  # the participant's, not the model's
    assert all(s["task"] == "emotion_cls" and sorted(s["options"]) == ["happy", "sad"] for s in samples)
    assert samples[0]["conversations"][1]["content"] == "happy."

    # each window became a clip: its 8 frames over the window's length, and its audio
    video = out.parent / samples[1]["video"]
    assert video.is_file() and samples[1]["video"].startswith("study_media/")
    times = video_times(video)
    assert len(times) == 8 and times[-1] - times[0] == pytest.approx(WINDOW_S * 7 / 8, abs=0.05)
    frames, audio = saved[("s1", 2)]
    got = clip_frames(video)
    assert got.shape == frames.shape
    assert np.abs(got.astype(int) - frames.astype(int)).mean() < 8  # lossy, but the same pictures
    sound = decode_audio(video)
    assert sound is not None and abs(len(sound) - len(audio)) < 0.1 * AUDIO_RATE
    assert np.abs(sound).max() > 0.05  # the speech survived encoding

    # the SRE run reads it as is (dry run: every clip readable, no server called)
    r = run_cli(capsys, "sre", str(out), "--out", str(tmp_path / "sre"), "--vlm", "http://127.0.0.1:9/v1",
             "--vlm-model", "m", "--llm", "http://127.0.0.1:9/v1", "--llm-model", "m", "--asr", "none",
             "--dry-run")
    assert r.returncode == 0, r.stderr
    dry = json.loads(r.stdout.strip().splitlines()[-1])
    assert dry["clips"] == 2 and dry["unreadable"] == 0


def test_study_consented_flag_and_refusals(sessions, tmp_path, capsys):
    from model.data.preprocess import no_face_tracker
    from model.train.dataset import TrainDataset

    root, _ = sessions
    out = tmp_path / "study.jsonl"
    # the model's own output is never taken as the participant's label
    r = run_cli(capsys, "study", str(root), "--out", str(out), "--label-field", "label")
    assert r.returncode == 2 and "model's own output" in r.stderr and not out.exists()
    r = run_cli(capsys, "study", str(root), "--out", str(out), "--consented", "--session", "s2", "--session", "s3")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    # --consented covers s2 (no consent field) but never s3 (consent withdrawn, media stored)
    assert (root / "s3_media" / "window_001_00000.npz").is_file()
    assert summary["sessions"] == 1 and summary["samples"] == 1
    (sample,) = read_manifest(out)
    assert sample["id"] == "study/s2/001_00000" and sample["label"] == "happy"
    assert "happy" in sample["options"] and len(sample["options"]) >= 2  # DFEW classes added
    ds = TrainDataset(read_manifest(out), 2, base_dir=out.parent, face_tracker=no_face_tracker)
    assert ds[0]["clip"].has_video
    # nothing is overwritten silently; an unknown session is named
    r = run_cli(capsys, "study", str(root), "--out", str(out), "--consented")
    assert r.returncode == 2 and "--overwrite" in r.stderr
    r = run_cli(capsys, "study", str(root), "--out", str(tmp_path / "x.jsonl"), "--session", "nope")
    assert r.returncode == 2 and "nope" in r.stderr
