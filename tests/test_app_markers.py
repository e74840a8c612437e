"""Markers on the page without a browser: the "mark event" of a PageSession fed like a
browser, its marker in the study log and in the records of the windows it falls in,
drawn on the timeline; an LSL marker to a running session; the participant view's
refresh sends no labels; the recording indicator and the researcher's overview."""
from __future__ import annotations

import csv

import numpy as np
import pylsl
import pytest

import app
from live.page.render import MARKER_RGB, recording_markdown, sessions_markdown, timeline_figure
from live.page.live_tab import refresh
from live.page.session import PageSession
from live.study_log import read_jsonl
from model.serve.serving import ModelHolder
from tests.test_app_handlers import clip, feed, tiny, wait_until  # noqa: F401  (fixtures)


def test_marked_event_reaches_log_records_and_timeline(tiny, clip, tmp_path):  # noqa: F811
    _, _, frames, audio48 = clip
    s = PageSession(tiny, window_s=1.0, hop_s=0.5, log_root=tmp_path)
    s.study.set_logging(True, "P07", "S07")
    with pytest.raises(ValueError, match="start the live session first"):
        s.study.mark("too early")
    half = len(frames) // 2
    feed(s, frames[:half], audio48)
    m = s.study.mark("  stim_1 ", "negative")
    with pytest.raises(ValueError, match="non-empty event"):
        s.study.mark("   ")
    feed(s, frames[half:], audio48[half * 4800:])
    s.study.lsl_marker("from_lsl", None, pylsl.local_clock())
    assert wait_until(lambda: any(r["start"] > m.media_time for r in s.view.records))
    banner, *_, timeline, _stats = refresh(s)
    s.runner.stop()
    assert (m.event, m.condition) == ("stim_1", "negative") and m.lsl_time and m.wall_time
    logged = read_jsonl(tmp_path / "S07.jsonl")
    marks = [r for r in logged if r.get("type") == "marker"]
    assert [(r["event"], r["run"]) for r in marks] == [("stim_1", s.runner.run_no), ("from_lsl", s.runner.run_no)]  # one run
    assert marks[0]["media_time"] == pytest.approx(m.media_time, abs=1e-3)
    windows = [r for r in logged if "index" in r]
    for r in windows:
        inside = r["start"] <= m.media_time < r["end"]
        assert ("stim_1" in [e["event"] for e in r["events"]]) == inside
        if r["start"] >= m.media_time and r["start"] < marks[1]["media_time"]:
            assert (r["event"], r["condition"]) == ("stim_1", "negative")
    assert any(r["events"] for r in windows)
    # the session CSV: marker rows say so, window rows carry their event and condition
    with open(s.study.log.export_csv(), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["type"], r["event"]) for r in rows if r["type"]] == [("marker", "stim_1"), ("marker", "from_lsl")]
    assert any(r["event"] == "stim_1" and r["condition"] == "negative" and r["index"] for r in rows)
    ax = timeline.axes[0]
    dashed = [l for l in ax.get_lines() if l.get_linestyle() == "--"]
    # the log keeps 0.1 ms; rounding both sides again could split a tie (4.0935 -> 4.094 vs 4.093)
    assert [l.get_xdata()[0] for l in dashed] == pytest.approx([m.media_time, marks[1]["media_time"]], abs=1e-3)
    assert {t.get_text() for t in ax.texts} >= {"stim_1", "from_lsl"}


def test_timeline_draws_markers_without_windows():
    fig = timeline_figure([], markers=[{"event": "onset", "media_time": 2.0}])
    ax = fig.axes[0]
    assert [l.get_xdata()[0] for l in ax.get_lines()] == [2.0]
    assert ax.get_lines()[0].get_color() == MARKER_RGB and ax.texts[0].get_text() == "onset"


def test_participant_view_is_sent_no_labels(tiny, clip, tmp_path):  # noqa: F811
    _, _, frames, audio48 = clip
    s = PageSession(tiny, window_s=1.0, hop_s=0.5, log_root=tmp_path)
    s.view.participant_view = True
    assert "Not recording" in recording_markdown(s)
    feed(s, frames[:20], audio48)
    assert wait_until(lambda: s.view.latest is not None)
    indicator = recording_markdown(s)
    banner, *rest = refresh(s)
    s.runner.stop()
    assert "RECORDING" in indicator and "✅ camera" in indicator and "✅ microphone" in indicator
    assert "tiny" in banner
    assert all(isinstance(x, dict) for x in rest)  # gr.skip(): faces, label, explanation, plot... not sent
    table = sessions_markdown([s])
    assert "participant" in table and (s.view.latest["label"] or "–") in table


@pytest.mark.parametrize("argv,needle", [
    (["--ssl-certfile", "cert.pem"], "--ssl-certfile and --ssl-keyfile go together"),
    (["--ssl-certfile", "nope.pem", "--ssl-keyfile", "nope.key"], "--ssl-certfile file not found: nope.pem"),
    (["--markers", "psychopy"], "expected lsl:NAME"),
])
def test_app_rejects_bad_ssl_and_marker_options(argv, needle):
    with pytest.raises(app.CliError, match=needle):
        app.check_args(app.parse_args(argv))


def test_app_names_an_lsl_stream_that_does_not_answer(capsys, monkeypatch):
    monkeypatch.setattr(app, "setup_logging", lambda log_file: None)  # no handlers left on the root logger
    assert app.main(["--markers", "lsl:absent-stream-" + str(id(capsys))]) == app.EXIT_USAGE
    assert "no LSL stream named" in capsys.readouterr().err


def test_app_outlet_publishes_a_tabs_analysed_windows(tiny, clip, tmp_path):  # noqa: F811
    import json
    import uuid

    from live.lsl import WindowOutlet

    _, _, frames, audio48 = clip
    name = f"omni-app-{uuid.uuid4().hex[:10]}"
    s = PageSession(tiny, window_s=1.0, hop_s=0.5, log_root=tmp_path)
    s.study.outlet = WindowOutlet(name)
    (info,) = pylsl.resolve_byprop("name", name, timeout=5)
    inlet = pylsl.StreamInlet(info)
    inlet.open_stream(timeout=5)
    feed(s, frames[:20], audio48)
    assert wait_until(lambda: sum(r["analysed"] for r in s.view.records) >= 2)
    s.runner.stop()
    published = [r["index"] for r in s.view.records if r["analysed"]]
    got = []
    while True:
        sample, _ = inlet.pull_sample(timeout=1.0)
        if sample is None:
            break
        got.append(json.loads(sample[0])["index"])
    assert got == published  # every analysed window, in order, the last drained one too
