"""The page's parts without a browser: numpy frames and audio chunks (48 kHz, as a
browser sends) pushed into a ``PageSession``, the page refresh, file analysis, the
model holder's offline fallback, the one result shape, and study logs."""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import app
from live.contract.result import make_result
from live.worker import AnalyserWorker
from live.page.hosting import ServerErrors
from live.page.file_analysis import analyse_video, file_outputs
from live.page.render import BOX_RGB, WAITING, label_markdown, model_banner
from live.page.live_tab import refresh
from live.page.session import PageSession
from live.page.view import NO_MEDIA_WARN_S
from live.sources import SourceError
from live.study_log import LogOwners, StudyLog, StudyLogError, read_jsonl
from model.net.answers import ParsedAnswer, parse_answer
from model.serve.serving import UNTRAINED, ModelHolder
from tests.media import _resample_to, clip_frames, make_clip
from tests.test_live_engine import fake_window

FPS = 10  # frames/s pushed (a browser streams ~5)
BROWSER_RATE = 48_000  # Hz, what a browser's microphone stream delivers


@pytest.fixture(scope="module")
def tiny():
    holder = ModelHolder("tiny", max_new_tokens=6)
    holder.start().join()
    assert holder.state == "ready", holder.message
    return holder


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    info = make_clip(path, seconds=4.0, fps=FPS)
    audio48 = (_resample_to(info["audio"], 16_000, BROWSER_RATE) * 32767).astype(np.int16)
    return path, info, clip_frames(path), audio48


def feed(session: PageSession, frames, audio48, period: float = 1.0 / FPS) -> None:
    """Push frames + 48 kHz int16 chunks in real time, as the stream handlers do."""
    step = int(BROWSER_RATE * period)
    for i, f in enumerate(frames):
        session.runner.push_frame(f)
        session.runner.push_audio((BROWSER_RATE, audio48[i * step:(i + 1) * step]))
        if i == 0:
            assert session.runner.source.ready.wait(30), "engine did not start"
        time.sleep(period)


def inline_image(html: str) -> np.ndarray:
    """The picture of an ``<img src="data:image/jpeg;base64,...">`` (the face preview)."""
    import base64
    import io
    import re

    from PIL import Image

    data = re.search(r'src="data:image/jpeg;base64,([^"]+)"', html).group(1)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


def wait_until(cond, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_live_session_frames_and_48khz_audio(tiny, clip, tmp_path):
    _, info, frames, audio48 = clip
    s = PageSession(tiny, window_s=2.0, hop_s=1.0, log_root=tmp_path)
    banner = s.study.set_logging(True, "P01", "S01")
    assert "Study logging is ON" in banner and "no raw video or audio" in banner
    feed(s, frames, audio48)
    assert wait_until(lambda: sum(r["analysed"] for r in s.view.records) >= 1)
    s.runner.stop()  # returns once the last window drained: records are final from here on
    assert not s.runner.thread.is_alive()
    assert s.view.audio_rate == BROWSER_RATE and s.view.audio_s == pytest.approx(4.0, abs=0.2)
    done = [r for r in s.view.records if r["analysed"]]
    assert done[0]["face_track"] is not None and done[0]["model"] == "tiny" and done[0]["latency_s"] >= 0
    assert done[0]["analyse_s"] > 0 and done[0]["reason"] is None and done[0]["tokens"]["generated"] > 0
    assert set(make_result()) <= set(done[0])  # the window record carries the one result shape
    assert 0.0 < max(r["speech_ratio"] for r in s.view.records) <= 1.0  # espeak speech at 1 s
    # the page refresh: a box drawn on the frame, the label, the explanation, the stats
    banner, faces, speech, label, expl, timeline, stats = refresh(s)
    assert "tiny" in banner and "Study logging is ON" in banner
    faces = inline_image(faces)  # sent inline: no file of the face is written
    assert faces.shape == frames[0].shape and (np.abs(faces.astype(int) - frames[-1]).sum(-1) > 0).any()
    assert (np.abs(faces.astype(int) - BOX_RGB).max(-1) < 40).sum() > 100  # the green box (JPEG)
    assert "window " in label and expl.strip()
    assert timeline.axes[0].get_lines()[0].get_xdata().size == len(done)
    assert "48000 Hz" in stats and "#" in stats and "tiny" in stats
    assert isinstance(refresh(s)[1], dict)  # no new frame: the image is not sent again
    logged = read_jsonl(tmp_path / "S01.jsonl")
    assert len(logged) == len(s.view.records) and logged[0]["participant"] == "P01"
    # the study log line is the page's record plus who/when and consent, nothing renamed
    assert set(logged[0]) == set(s.view.records[0]) | {"session", "participant", "wall_time", "consent", "consent_at",
                                                 "media"}
    assert logged[0]["consent"] is False and logged[0]["consent_at"] is None  # none given
    assert logged[0]["self_report"] is None and logged[0]["self_report_at"] is None  # none stated
    assert not (tmp_path / "S01_media").exists()  # no raw media unless asked


def test_keep_media_needs_consent_and_feeds_the_study_builder(tiny, clip, tmp_path):
    """The study mode end to end: consent recorded, raw media only with it, the
    participant's self-report in every window record beside the model's label, and
    ``curate study`` reads the session as it is (no --consented) into labelled samples."""
    from model.data.curate.study import build
    from model.data.manifest import read_manifest

    _, _, frames, audio48 = clip
    s = PageSession(tiny, window_s=1.0, hop_s=1.0, log_root=tmp_path)
    with pytest.raises(StudyLogError, match="consent"):
        s.study.set_logging(True, "P02", "S02", keep_media=True)  # consent box not ticked
    assert s.study.log is None and not (tmp_path / "S02.jsonl").exists()
    with pytest.raises(StudyLogError, match="consent"):
        StudyLog(tmp_path, "S02", "P02", keep_media=True)  # the log itself refuses too
    before = round(time.time(), 3) - 0.001  # the log's times are rounded to ms
    banner = s.study.set_logging(True, "P02", "S02", keep_media=True, consent=True)
    assert "ARE stored" in banner and "consented" in banner
    with pytest.raises(ValueError, match="at most"):
        s.study.set_self_report("x" * 65)
    assert s.study.set_self_report("  Happy ") == "Happy" and s.study.self_report_at >= before
    feed(s, frames[:25], audio48)
    assert wait_until(lambda: len(s.view.records) >= 1)
    n = len(read_jsonl(tmp_path / "S02.jsonl"))
    assert s.view.records[0]["self_report"] == "Happy"  # the page's record is the logged one
    s.close()  # returns once the last window and its media are on disk
    logged = read_jsonl(tmp_path / "S02.jsonl")
    npz = sorted((tmp_path / "S02_media").glob("*.npz"))
    assert npz, "keep_media stored nothing"
    assert len(logged) >= n and len(npz) == len(logged)  # one media file per logged window
    assert not list((tmp_path / "S02_media").glob("*.part"))  # no half-written file left
    with np.load(npz[0]) as z:
        assert z["frames"].shape[1:] == frames.shape[1:] and z["audio"].dtype == np.float32
        assert int(z["rate"]) == 16_000
    for r in logged:
        assert r["consent"] is True and before <= r["consent_at"] <= r["wall_time"]
        assert r["self_report"] == "Happy" and before <= r["self_report_at"] <= r["wall_time"]
        assert r["label"] != "Happy"  # the model's field is the model's

    out = tmp_path / "curated" / "study.jsonl"
    summary = build(tmp_path, out)  # no consented=True: the log says consent: true
    assert summary["sessions"] == 1 and summary["samples"] == len(npz) and not summary["skipped"]
    samples = read_manifest(out)
    assert {x["label"] for x in samples} == {"happy"}
    assert samples[0]["id"].startswith("study/S02/") and (out.parent / samples[0]["video"]).is_file()


def test_consent_withdrawn_stops_media_and_self_report_clears(tiny, tmp_path):
    s = PageSession(tiny, log_root=tmp_path)
    s.study.set_logging(True, "P06", "S06", keep_media=True, consent=True)
    s.study.set_self_report("tired")
    s.study.set_self_report("")  # cleared: no self-report from here on
    assert s.study.self_report is None and s.study.self_report_at is None
    assert "no raw video or audio" in s.study.set_consent(False)
    s.study.log.write_window({"run": 1, "index": 0}, np.zeros((1, 4, 4, 3), np.uint8), None, 16_000)
    assert not list(tmp_path.glob("S06_media/*"))  # withdrawn: no media stored
    line = s.study.log.write({"index": 0, "consent": True})  # a record cannot claim consent
    assert line["consent"] is False and line["consent_at"] is None
    s.study.set_consent(True)
    assert s.study.log.consent and s.study.log.consent_at is not None and not s.study.log.keep_media
    s.close()


class _Crashing:
    """A model that fails on its second window (a mid-session crash)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, window, on_partial=None):
        self.calls += 1
        if on_partial:
            on_partial("partial explanation", parse_answer("partial explanation"))
        if self.calls == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return make_result(label="happy", labels=["cheerful"], explanation="smiles", model="fake")


def test_model_crash_mid_session_is_shown_and_logged(clip, tmp_path):
    _, _, frames, audio48 = clip
    s = PageSession(ModelHolder.ready(_Crashing(), "fake"), 1.0, 1.0, log_root=tmp_path)
    s.study.set_logging(True, "P03", "S03")
    feed(s, frames[:35], audio48)
    assert wait_until(lambda: len([r for r in s.view.records if r["reason"] != "dropped"]) >= 3)
    s.runner.stop()  # the last window drains and is logged before stop() returns
    errors = [r for r in s.view.records if r["error"]]
    assert len(errors) == 1 and "out of memory" in errors[0]["error"]
    assert any(r["label"] == "happy" and r["labels"] == ["cheerful"] for r in s.view.records)
    s.view.latest = errors[0]
    assert "analysis failed" in refresh(s)[3]
    assert len(read_jsonl(tmp_path / "S03.jsonl")) == len(s.view.records)  # log intact, errors included
    s.close()
    assert s.view.records == [] and s.view.frame is None  # a closed tab keeps nothing


class _HeldUntilStop:
    """A model whose first window finishes only once the session is asked to stop:
    that window's record must still be in (page + study log) when stop() returns."""

    def __init__(self):
        self.session, self.calls, self.started = None, 0, threading.Event()

    def __call__(self, window, on_partial=None):
        self.calls += 1
        if self.calls == 1:
            self.started.set()
            while not self.session.runner.paused:  # released by stop() itself
                time.sleep(0.01)
            return make_result(label="held", model="fake")
        return make_result(label="calm", model="fake")


def test_stop_returns_after_the_window_in_flight_is_recorded(clip, tmp_path):
    _, _, frames, audio48 = clip
    model = _HeldUntilStop()
    s = PageSession(ModelHolder.ready(model, "fake"), 1.0, 1.0, log_root=tmp_path)
    model.session = s
    s.study.set_logging(True, "P05", "S05")
    feed(s, frames[:25], audio48)
    assert model.started.wait(30)
    s.runner.stop()
    held = [r for r in s.view.records if r["label"] == "held"]
    assert len(held) == 1 and held[0]["analysed"]  # recorded before stop() returned
    logged = read_jsonl(tmp_path / "S05.jsonl")
    assert [r["index"] for r in logged] == [r["index"] for r in s.view.records]
    assert not s.runner.thread.is_alive() and not s.runner.running
    n = len(s.view.records)
    s.runner.push_frame(frames[0])  # a late frame after Stop neither restarts nor records
    assert len(s.view.records) == n and not s.runner.running
    s.close()
    assert len(read_jsonl(tmp_path / "S05.jsonl")) == n


class _LabelsThenHeld:
    """A labels-first model that streams its label list (parsed against its options, as
    a classifying analyser does), then holds the explanation until the test releases it:
    the page must show the label meanwhile, the model's parse of it."""

    OPTIONS = ["Happiness", "Sadness"]

    def __init__(self):
        self.streamed, self.release = threading.Event(), threading.Event()

    def __call__(self, window, on_partial=None):
        for text in ("Open-vocabulary labels: happy, chee", "Open-vocabulary labels: happy, cheerful.",
                     "Open-vocabulary labels: happy, cheerful. She smi"):
            on_partial(text, parse_answer(text, self.OPTIONS))
        self.streamed.set()
        self.release.wait(30)
        return make_result(label="Happiness", labels=["happy", "cheerful"], explanation="She smiles.",
                           model="fake")


def test_the_label_shows_as_soon_as_its_list_closes_in_the_stream(clip, tmp_path):
    _, _, frames, audio48 = clip
    model = _LabelsThenHeld()
    s = PageSession(ModelHolder.ready(model, "fake"), 1.0, 1.0, log_root=tmp_path)
    try:
        feed(s, frames[:15], audio48)
        assert model.streamed.wait(30)
        out = refresh(s)
        assert s.view.latest is None  # no window has finished yet
        # the model's parse (its option), not one of the page's own (which would say "happy")
        assert out[3].startswith("### Happiness") and "happy, cheerful" in out[3] and "still coming" in out[3]
        assert out[4] == "She smi"  # the explanation so far, without the label sentence
    finally:
        model.release.set()
        s.close()


def test_streamed_label_waits_for_the_closed_list_and_is_the_servers_parse(tiny):
    """The page draws the parse the served model handed with the text (it parses no
    answer itself), and only once the label list is closed."""
    s = PageSession(tiny)
    s.view.in_flight = (1, 3)
    still_open = "Open-vocabulary labels: happy, chee"
    s.view.partial = (still_open, parse_answer(still_open))
    label, expl = refresh(s)[3:5]
    assert label == WAITING and expl == still_open  # no label from an open list: the text so far
    closed = "Open-vocabulary labels: happy. She"
    s.view.partial = (closed, ParsedAnswer("joy", ["joy", "glad"], "She"))  # the parse says: not closed yet
    label, expl = refresh(s)[3:5]  # the page goes by the parse, not by the text
    assert expl == closed and not str(label).startswith("### joy")  # label: unchanged (a skip)
    s.view.partial = (closed, ParsedAnswer("joy", ["joy", "glad"], "She", labels_closed=True))
    label, expl = refresh(s)[3:5]
    assert label.startswith("### joy") and "joy, glad" in label and "window 3" in label and expl == "She"


def test_study_log_belongs_to_the_browser_session_that_opened_it(tiny, tmp_path):
    owners = LogOwners()
    mine = PageSession(tiny, log_root=tmp_path, owners=owners)
    theirs = PageSession(tiny, log_root=tmp_path, owners=owners)
    mine.study.set_logging(True, "P1", "S9", owner="hash-A")
    mine.study.log.write({"index": 0})
    with pytest.raises(StudyLogError, match="another browser session"):
        theirs.study.set_logging(True, "P2", "S9", owner="hash-B")  # naming the id is not enough
    with pytest.raises(StudyLogError, match="needs the browser session"):
        theirs.study.set_logging(True, "P2", "S9")
    assert theirs.study.log is None
    mine.study.set_logging(False)
    mine.study.set_logging(True, "P1", "S9", owner="hash-A")  # the owner turns it back on: appends
    mine.study.log.write({"index": 1})
    mine.close()
    assert [r["index"] for r in read_jsonl(tmp_path / "S9.jsonl")] == [0, 1]
    # after a restart (new owners), an existing log is not re-opened from the page
    with pytest.raises(StudyLogError, match="already has a log"):
        PageSession(tiny, log_root=tmp_path, owners=LogOwners()).study.set_logging(True, "P1", "S9", owner="hash-A")
    # the app's --log-session log: every tab writes to it, none can close or claim it
    shared = StudyLog(tmp_path, "S10", "P10")
    reserved = LogOwners()
    reserved.reserve(tmp_path, "S10", "app")
    tab = PageSession(tiny, log_root=tmp_path, shared_log=shared, owners=reserved)
    assert tab.study.log is shared and not tab.study.own_log
    with pytest.raises(StudyLogError, match="another browser session"):
        tab.study.set_logging(True, "P10", "S10", owner="hash-C")
    tab.close()
    assert not shared.closed
    shared.close()


def test_analyser_failure_logs_one_line_per_window_and_one_traceback(caplog):
    class Broken:
        def __call__(self, window):
            raise RuntimeError(f"weights corrupted (simulated, {id(self)})")

    worker = AnalyserWorker(Broken()).start()
    with caplog.at_level(logging.ERROR, logger="live.worker"):
        for i in range(3):
            worker.submit(fake_window(i))
            assert worker.wait_idle(30)
    worker.stop()
    lines = [r for r in caplog.records if "analyser failed" in r.getMessage()]
    assert [f"window {i} " in r.getMessage() for i, r in enumerate(lines)] == [True] * 3
    assert [r.exc_info is not None for r in lines] == [True, False, False]
    assert worker.errors == 3


def test_server_errors_are_one_line_and_disconnects_are_quiet(caplog):
    """uvicorn's "Exception in ASGI application" records, through the app's filter."""
    from starlette.requests import ClientDisconnect

    def record(exc):
        try:
            raise exc
        except Exception:
            return logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1,
                                     "Exception in ASGI application\n", (), sys.exc_info())

    f = ServerErrors()
    with caplog.at_level(logging.INFO, logger="app"):
        assert f.filter(record(ClientDisconnect())) is False  # dropped: a line in the log file only
        shown = [record(ValueError("bad header\nsecond line")) for _ in range(2)]
        assert all(f.filter(r) for r in shown)
    assert [r.getMessage() for r in shown] == ["Exception in ASGI application: ValueError: bad header"] * 2
    assert all(r.exc_info is None for r in shown)  # the terminal gets no traceback
    to_file = [r for r in caplog.records if r.name == "app"]
    assert "client disconnected" in to_file[0].getMessage()
    assert [r.exc_info is not None for r in to_file[1:]] == [True, False]  # traceback once


def test_label_says_why_a_window_has_no_result():
    pending = {"index": 4, "analysed": False, "reason": "pending", "pending": "loading tiny…", "error": None}
    assert label_markdown(pending).endswith("window 4: loading tiny…")
    assert label_markdown(None) == WAITING


def test_no_camera_or_microphone_warns(tiny):
    s = PageSession(tiny)
    s.runner.start()
    s.runner.started_at -= NO_MEDIA_WARN_S + 1  # as if started a while ago with nothing arriving
    text = " ".join(s.warnings())
    s.runner.stop()
    assert "allow camera access" in text and "allow microphone access" in text


def test_analyse_video_every_window(tiny, clip, tmp_path):
    path, info, _, _ = clip
    fracs = []
    with StudyLog(tmp_path, "S04", "P04") as log:
        records = analyse_video(path, tiny, 2.0, 1.0, study=log, progress=fracs.append)
    assert [r["index"] for r in records] == [0, 1, 2]  # ends at 2, 3, 4 s
    assert all(r["analysed"] for r in records) and fracs and max(fracs) > 0.9
    # a file is read as fast as possible: no wall-clock latency, but the analyser's seconds
    assert all(r["latency_s"] is None and r["analyse_s"] > 0 for r in records)
    status, rows, fig, jsonl, csv_path = file_outputs(records, "clip.mp4", tmp_path / "exports")
    assert "3 windows, 3 analysed" in status and len(rows) == 3
    # exports under the study folder, owner-only; the analysis is one run
    assert Path(jsonl).parent.parent == tmp_path / "exports" and oct(Path(jsonl).stat().st_mode & 0o777) == "0o600"
    assert oct(Path(jsonl).parent.stat().st_mode & 0o777) == "0o700"
    assert len({r["run"] for r in records}) == 1 and all(r["self_report"] is None for r in records)
    assert [json.loads(x)["index"] for x in open(jsonl)] == [0, 1, 2]
    assert len(open(csv_path).read().splitlines()) == 4
    assert len(read_jsonl(tmp_path / "S04.jsonl")) == 3


def test_unreadable_video_is_a_clear_error(tiny, tmp_path):
    bad = tmp_path / "upload.mp4"
    bad.write_bytes(b"\x00garbage" * 200)
    with pytest.raises(SourceError, match="upload.mp4"):
        analyse_video(bad, tiny)


def test_default_model_falls_back_fast_when_offline():
    # conftest sets HF_HUB_OFFLINE=1: the hub is not even tried
    holder = ModelHolder(None, max_new_tokens=4)
    t0 = time.monotonic()
    holder.start().join(60)
    assert time.monotonic() - t0 < 30
    assert holder.state == "ready" and UNTRAINED in holder.name
    banner = model_banner(holder)
    assert "could not be fetched" in banner and "HF_HUB_OFFLINE" in banner and UNTRAINED in banner


def test_model_that_fails_to_load_says_so(tmp_path):
    holder = ModelHolder(str(tmp_path), max_new_tokens=4)  # a folder without a checkpoint
    holder.start().join(30)
    assert holder.state == "failed" and "config.json" in model_banner(holder)
    result = holder.analyse(object())
    assert result["label"] is None and "failed to load" in result["pending"]
    assert result == make_result(pending=result["pending"])  # the one result shape


def test_plan_loads_through_quant(tmp_path):
    """A plan chosen on the page reloads the model through quant.load_model (4-bit)."""
    holder = ModelHolder("tiny", max_new_tokens=4, plan_loader=app.PLAN_LOADER)
    holder.start("nf4").join(60)
    assert holder.state == "ready", holder.message
    kinds = {type(m).__name__ for m in holder.analyser.model.modules()}
    assert "Linear4bit" in kinds
    unplanned = ModelHolder("tiny", max_new_tokens=4)  # no loader: a plan is refused
    unplanned.start("nf4").join(60)
    assert unplanned.state == "failed" and "needs a loader" in model_banner(unplanned)


def test_study_log_ids_and_csv(tmp_path):
    with pytest.raises(StudyLogError, match="session id"):
        StudyLog(tmp_path, "../escape", "P1")
    with StudyLog(tmp_path, "S1", "P1") as log:
        log.write({"index": 0, "labels": ["a", "b"], "label": "a"})
    with StudyLog(tmp_path, "S1", "P1") as log:  # re-opening appends
        log.write({"index": 1, "labels": [], "label": None})
        out = log.export_csv()
    assert [r["index"] for r in read_jsonl(tmp_path / "S1.jsonl")] == [0, 1]
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and "a; b" in lines[1]
    (tmp_path / "S1.jsonl").open("a").write('{"index": 2, "lab')  # a write cut short
    with pytest.raises(StudyLogError, match=":3:"):
        read_jsonl(tmp_path / "S1.jsonl")
    assert len(read_jsonl(tmp_path / "S1.jsonl", allow_partial_tail=True)) == 2


def test_cli_rejects_bad_arguments(capsys):
    assert app.main(["--log-session", "S"]) == 2
    assert app.main(["--log-session", "a b", "--participant", "P"]) == 2
    assert app.main(["--video", "/nonexistent.mp4"]) == 2
    err = capsys.readouterr().err
    assert "go together" in err and "not valid" in err and "not found" in err
    assert app.main(["--keep-media", "--log-session", "S", "--participant", "P"]) == 2
    assert "--keep-media" in capsys.readouterr().err  # raw media need --consent
