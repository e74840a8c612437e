"""Event markers: the events table (validated with errors naming row and column), the
timeline's window fields (an event holds until the next; null before the first;
markers inside a window listed), and live.run --events writing markers.jsonl and the
fields into every window record of a real clip."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from live.contract.cli import EXIT_USAGE
from live.engine import Engine, EngineConfig
from live.markers import EventsError, Marker, MarkerTimeline, load_events
from live.sources import FileSource
from tests.media import cached_clip

ROOT = Path(__file__).resolve().parents[1]


def table(tmp_path, text, name="events.csv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_events_table_is_read_in_time_order(tmp_path):
    p = table(tmp_path, "time_s,event,condition\n2.5,stim_b,negative\n0.5,stim_a,positive\n3,rest,\n")
    got = load_events(p)
    assert [(m.media_time, m.event, m.condition) for m in got] == [
        (0.5, "stim_a", "positive"), (2.5, "stim_b", "negative"), (3.0, "rest", None)]
    assert got[0].to_json() == {"type": "marker", "event": "stim_a", "condition": "positive",
                                "media_time": 0.5, "lsl_time": None, "wall_time": None}
    # the condition column is optional
    assert [m.event for m in load_events(table(tmp_path, "time_s,event\n1,x\n", "b.csv"))] == ["x"]


@pytest.mark.parametrize("text,needle", [
    ("time_s,event\n1,a\nsoon,b\n", "row 2, column time_s: 'soon' is not a time"),
    ("time_s,event\n-1,a\n", "row 1, column time_s: '-1'"),
    ("time_s,event\nnan,a\n", "row 1, column time_s: 'nan'"),
    ("time_s,event\n1,a\n2,  \n", "row 2, column event: empty"),
    ("time,event\n1,a\n", "missing column(s) time_s"),
    ("time_s,event,conditon\n1,a,b\n", "unknown column(s) conditon"),
    ("time_s,event\n1,a,extra\n", "row 1: 3 cells for 2 columns"),
    ("", "header (empty)"),
])
def test_bad_events_tables_name_row_and_column(tmp_path, text, needle):
    p = table(tmp_path, text)
    with pytest.raises(EventsError) as e:
        load_events(p)
    assert needle in str(e.value) and str(p) in str(e.value)


def test_window_fields_hold_until_the_next_event():
    tl = MarkerTimeline([Marker("block", "A", 1.0), Marker("stim", None, 2.0),
                         Marker("block", "B", 5.0)])
    assert tl.fields(0.0, 1.0) == {"event": None, "condition": None, "events": []}  # end excluded
    f = tl.fields(0.5, 2.5)
    assert (f["event"], f["condition"]) == (None, None)  # nothing in force at 0.5
    assert [(e["event"], e["media_time"]) for e in f["events"]] == [("block", 1.0), ("stim", 2.0)]
    f = tl.fields(2.0, 6.0)  # starts on a marker: it is in force; a condition-less one keeps A
    assert (f["event"], f["condition"]) == ("stim", "A")
    assert [e["event"] for e in f["events"]] == ["stim", "block"]
    assert tl.fields(7.0, 8.0) == {"event": "block", "condition": "B", "events": []}


def test_subscribers_see_held_and_new_markers_once():
    seen = []
    tl = MarkerTimeline([Marker("a", None, 1.0)])
    tl.subscribe(seen.append)
    tl.add(Marker("b", None, 0.5))
    assert [m.event for m in seen] == ["a", "b"]
    assert [m.event for m in tl.markers()] == ["b", "a"]  # the timeline is in time order


def test_engine_records_carry_event_fields():
    g = cached_clip("markers", seconds=4.0, size=(160, 120), face_scale=80)
    tl = MarkerTimeline([Marker("onset", "calm", 1.5)])
    recs = []
    Engine(FileSource(g["path"]), None, EngineConfig(window_s=2.0, hop_s=1.0, every_window=True),
           markers=tl, on_window=lambda ev: recs.append(ev.to_json())).run()
    recs.sort(key=lambda r: r["index"])
    assert len(recs) >= 3
    for r in recs:
        active = r["start"] >= 1.5
        assert r["event"] == ("onset" if active else None)
        assert r["condition"] == ("calm" if active else None)
        inside = r["start"] <= 1.5 < r["end"]
        assert [e["event"] for e in r["events"]] == (["onset"] if inside else [])
    assert any(r["events"] for r in recs) and any(r["event"] for r in recs)
    # without a timeline every record still has the fields, empty
    plain = []
    Engine(FileSource(g["path"]), None, EngineConfig(window_s=2.0, hop_s=1.0),
           on_window=lambda ev: plain.append(ev.to_json())).run()
    assert plain and all((r["event"], r["condition"], r["events"]) == (None, None, [])
                         for r in plain)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "live.run", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_live_run_events_writes_markers_and_fields(tmp_path):
    g = cached_clip("markers", seconds=4.0, size=(160, 120), face_scale=80)
    ev = table(tmp_path, "time_s,event,condition\n0.5,fixation,\n2.2,video,happy\n")
    out = tmp_path / "o"
    r = run_cli(g["path"], "--out", out, "--events", ev, "--window", "2", "--hop", "1",
                "--every-window", "--no-progress")
    assert r.returncode == 0, r.stderr
    markers = [json.loads(l) for l in (out / "markers.jsonl").read_text().splitlines()]
    assert [(m["type"], m["event"], m["condition"], m["media_time"]) for m in markers] == [
        ("marker", "fixation", None, 0.5), ("marker", "video", "happy", 2.2)]
    wins = [json.loads(l) for l in (out / "windows.jsonl").read_text().splitlines()]
    assert wins
    for w in wins:
        want = "video" if w["start"] >= 2.2 else "fixation" if w["start"] >= 0.5 else None
        assert w["event"] == want
        assert w["condition"] == ("happy" if want == "video" else None)


def test_live_run_bad_events_table_is_a_usage_error(tmp_path):
    g = cached_clip("markers", seconds=4.0, size=(160, 120), face_scale=80)
    ev = table(tmp_path, "time_s,event\n1,a\nx,b\n")
    r = run_cli(g["path"], "--out", tmp_path / "o", "--events", ev)
    assert r.returncode == EXIT_USAGE
    assert "row 2, column time_s" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()
    r = run_cli(g["path"], "--out", tmp_path / "o", "--markers", "lsl:nothing")
    assert r.returncode == EXIT_USAGE and "need a live source" in r.stderr
    r = run_cli(g["path"], "--out", tmp_path / "o", "--events", table(tmp_path, "time_s,event\n1,a\n", "ok.csv"),
                "--realtime")
    assert r.returncode == EXIT_USAGE and "drop --realtime" in r.stderr
    assert not (tmp_path / "o").exists()


def test_a_window_waits_for_a_live_source_to_catch_up_with_its_end():
    """A live source's marker arrives after its time (transport, reader thread): the
    window that holds it is closed only once the source has been heard past its end."""
    import threading

    t = MarkerTimeline()
    assert t.settle(5.0, timeout_s=0.0)  # no live source: nothing to wait for
    t.listen()

    def late_source():
        t.add(Marker("late", None, 2.0))  # stamped at 2.0 s, delivered now
        t.heard(3.5)

    threading.Timer(0.2, late_source).start()
    assert t.settle(3.0, timeout_s=30.0)
    assert [e["event"] for e in t.fields(1.5, 3.0)["events"]] == ["late"]
    assert not t.settle(9.0, timeout_s=0.05)  # a source that went quiet: bounded wait, False
