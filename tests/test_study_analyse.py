"""``python -m live.study analyse`` as a real subprocess on real recordings (made with
``live.testclip``): one study log per recording, the same windows as ``live.run``,
failures listed while the rest go on, kill -9 then --resume (every log whole, none
duplicated), and the errors found before any work."""
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from live.contract.appendfile import OutputLock
from live.contract.cli import EXIT_RUNTIME, EXIT_USAGE
from live.study import FAILURES, PARTIAL_DIR
from live.study_log import read_jsonl
from live.testclip import make_clip

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--analyser", "fake", "--fake-delay", "0", "--window", "2", "--hop", "0.5"]
N_WINDOWS = 5  # a 4 s clip in 2 s windows every 0.5 s: ends 2.0, 2.5, 3.0, 3.5, 4.0


def study(cmd, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "live.study", cmd, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(r) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = [l for l in r.stderr.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A study folder: two recordings of two participants, one file that is not media,
    a notes file that is not a recording, a participants table and one events table."""
    d = tmp_path_factory.mktemp("study")
    rec = d / "recordings"
    rec.mkdir()
    make_clip(rec / "s01.mp4", seconds=4.0, size=(320, 240))
    shutil.copy(rec / "s01.mp4", rec / "s02.mp4")
    (rec / "broken.mp4").write_bytes(b"not a video at all")
    (rec / "notes.txt").write_text("not a recording")
    (d / "participants.csv").write_text("recording,participant,consent\ns01.mp4,alice,yes\ns02,bob,no\n")
    ev = d / "events"
    ev.mkdir()
    (ev / "s01.csv").write_text("time_s,event,condition\n0.5,baseline,rest\n2.0,stimulus,stress\n")
    return d


def windows_of(log: Path) -> list[dict]:
    return [r for r in read_jsonl(log) if r.get("type") != "marker"]


def test_one_log_per_recording_the_same_windows_as_live_run(folder, tmp_path):
    out = tmp_path / "out"
    r = study("analyse", folder / "recordings", "--out", out, "--participants", folder / "participants.csv",
              "--events-dir", folder / "events", *FAST)
    assert r.returncode == EXIT_RUNTIME, r.stderr  # broken.mp4 failed, the others went on
    assert FAILURES in one_error_line(r)
    counts = json.loads(r.stdout.strip().splitlines()[-1])
    assert counts == {"recordings": 3, "done_before": 0, "withdrawn": 0, "analysed": 2, "failed": 1,
                      "windows": 2 * N_WINDOWS}
    assert sorted(p.name for p in out.glob("*.jsonl")) == [FAILURES, "s01.jsonl", "s02.jsonl"]
    [failure] = read_jsonl(out / FAILURES)
    assert failure["recording"] == "broken.mp4" and "broken.mp4" in failure["error"]
    assert not (out / PARTIAL_DIR).exists()
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE((out / "s01.jsonl").stat().st_mode) == 0o600

    # s01: alice, consented, with its events; s02: bob, no consent, no events
    s01 = read_jsonl(out / "s01.jsonl")
    markers = [m for m in s01 if m.get("type") == "marker"]
    assert [(m["event"], m["media_time"]) for m in markers] == [("baseline", 0.5), ("stimulus", 2.0)]
    w1, w2 = windows_of(out / "s01.jsonl"), windows_of(out / "s02.jsonl")
    assert {(w["participant"], w["session"], w["consent"], w["source"]) for w in w1} == {
        ("alice", "s01", True, "s01.mp4")}
    assert {(w["participant"], w["consent"]) for w in w2} == {("bob", False)}
    assert [(w["start"], w["event"], w["condition"]) for w in w1] == [
        (0.0, None, None), (0.5, "baseline", "rest"), (1.0, "baseline", "rest"),
        (1.5, "baseline", "rest"), (2.0, "stimulus", "stress")]
    assert all(w["event"] is None for w in w2)

    # the same analysis as live.run on the same file: every field of the window record
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, "-m", "live.run", folder / "recordings" / "s01.mp4", "--out", ref,
                    "--every-window", *FAST], cwd=ROOT, check=True, capture_output=True, timeout=300)
    expected = read_jsonl(ref / "windows.jsonl")
    timing = {"queue_s", "analyse_s", "latency_s", "event", "condition", "events"}
    assert len(expected) == N_WINDOWS
    for got, want in zip(sorted(w2, key=lambda w: w["index"]), expected):
        assert {k: v for k, v in got.items() if k in want and k not in timing} == \
               {k: v for k, v in want.items() if k not in timing}


def test_kill_9_then_resume_every_log_whole_none_duplicated(folder, tmp_path):
    out = tmp_path / "out"
    rec = tmp_path / "recordings"
    rec.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        shutil.copy(folder / "recordings" / "s01.mp4", rec / name)
    slow = ["--analyser", "fake", "--fake-delay", "0.3", "--window", "2", "--hop", "0.5"]
    p = subprocess.Popen([sys.executable, "-m", "live.study", "analyse", str(rec), "--out", str(out), *slow],
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # kill it in the middle of a recording: its partial log has a line, not all
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            partial = list((out / PARTIAL_DIR).glob("*/*.jsonl")) if (out / PARTIAL_DIR).exists() else []
            if any(0 < len(f.read_bytes().splitlines()) < N_WINDOWS for f in partial):
                break
            assert p.poll() is None, "the analysis ended before it could be killed"
            time.sleep(0.02)
        else:
            pytest.fail("no partial log appeared")
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    complete_before = sorted(f.name for f in out.glob("?.jsonl"))
    assert len(complete_before) < 3

    again = study("analyse", rec, "--out", out, *slow)  # the house rule: an --out in use needs --resume
    assert again.returncode == EXIT_USAGE and "--resume" in one_error_line(again)
    r = study("analyse", rec, "--out", out, "--resume", *slow)
    assert r.returncode == 0, r.stderr
    counts = json.loads(r.stdout.strip().splitlines()[-1])
    assert counts["done_before"] == len(complete_before)
    assert counts["analysed"] == 3 - len(complete_before)
    for name in ("a", "b", "c"):
        idx = [w["index"] for w in windows_of(out / f"{name}.jsonl")]
        assert idx == list(range(N_WINDOWS)), (name, idx)  # whole, once
    assert not (out / PARTIAL_DIR).exists()


def test_resume_with_other_options_is_refused(folder, tmp_path):
    out = tmp_path / "out"
    rec = tmp_path / "recordings"
    rec.mkdir()
    shutil.copy(folder / "recordings" / "s01.mp4", rec / "a.mp4")
    assert study("analyse", rec, "--out", out, *FAST).returncode == 0
    r = study("analyse", rec, "--out", out, "--resume", *FAST[:-1], "1.0")
    assert r.returncode == EXIT_USAGE and "resume with the same" in one_error_line(r)


@pytest.mark.parametrize("make,needle", [
    (lambda d: ["analyse", d / "nowhere", "--out", d / "o"], "not a folder"),
    (lambda d: ["analyse", d / "empty", "--out", d / "o"], "holds no recording"),
    (lambda d: ["analyse", d / "recordings", "--out", d / "o", "--participants", d / "bad.csv"],
     "no recording named 'ghost.mp4'"),
    (lambda d: ["analyse", d / "recordings", "--out", d / "o", "--events-dir", d / "badevents"], "row 1"),
    (lambda d: ["analyse", d / "recordings", "--out", d / "o", "--jobs", "2"], "--jobs above 1 needs --pool"),
    (lambda d: ["analyse", d / "recordings", "--out", d / "o", "--window", "0"], "--window"),
    (lambda d: ["report", d / "empty"], "holds no study log"),
])
def test_bad_input_is_one_line_exit_2_before_work(folder, tmp_path, make, needle):
    (tmp_path / "empty").mkdir()
    (tmp_path / "recordings").symlink_to(folder / "recordings")
    (tmp_path / "bad.csv").write_text("recording,participant\nghost.mp4,p1\n")
    (tmp_path / "badevents").mkdir()
    (tmp_path / "badevents" / "s01.csv").write_text("time_s,event\nsoon,start\n")
    r = study(*make(tmp_path))
    assert r.returncode == EXIT_USAGE, r.stderr
    assert needle in one_error_line(r)
    assert not (tmp_path / "o").exists()  # nothing written before the checks


def test_a_second_writer_is_refused_naming_the_owner(folder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out):
        r = study("analyse", folder / "recordings", "--out", out, "--resume", *FAST)
    assert r.returncode == EXIT_USAGE
    assert f"pid {os.getpid()}" in one_error_line(r)


def test_progress_bars_over_recordings_and_windows(folder, tmp_path, capsys):
    """In process (a bar is drawn on a terminal only in the CLI): both bars count to the end."""
    from argparse import Namespace

    from live.worker import FakeAnalyser
    from live.engine import EngineConfig
    from live.study.analyse import StudyRun
    from live.study.recordings import list_recordings

    rec = tmp_path / "recordings"
    rec.mkdir()
    shutil.copy(folder / "recordings" / "s01.mp4", rec / "a.mp4")
    out = tmp_path / "out"
    out.mkdir()
    args = Namespace(face_models=None, plan=None)
    run = StudyRun(out, list_recordings(rec), args, EngineConfig(hop_s=0.5, window_s=2.0, every_window=True),
                   lambda session: FakeAnalyser(delay_s=0), progress=True)
    assert run.run()["windows"] == N_WINDOWS
    err = capsys.readouterr().err
    assert "recordings: 100%" in err and f"{N_WINDOWS}/{N_WINDOWS}" in err


def test_withdrawn_participant_is_not_analysed_again(folder, tmp_path):
    out = tmp_path / "out"
    rec = tmp_path / "recordings"
    rec.mkdir()
    for name in ("s01.mp4", "s02.mp4"):
        shutil.copy(folder / "recordings" / name, rec / name)
    table = ["--participants", folder / "participants.csv"]
    assert study("analyse", rec, "--out", out, *table, *FAST).returncode == 0
    r = study("withdraw", out, "--participant", "alice", "--records")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["original_recordings"] == [str(rec / "s01.mp4")]
    assert "s01.mp4" in r.stderr  # the originals are named, not deleted
    assert not any(w.get("participant") == "alice" for p in out.glob("s0*.jsonl") for w in read_jsonl(p))
    again = study("analyse", rec, "--out", out, "--resume", *table, *FAST)
    assert again.returncode == 0, again.stderr
    counts = json.loads(again.stdout.strip().splitlines()[-1])
    assert (counts["withdrawn"], counts["analysed"]) == (1, 0)
    assert not any(w.get("participant") == "alice" for p in out.glob("s0*.jsonl") for w in read_jsonl(p))
    redo = study("analyse", rec, "--out", out, "--overwrite", *table, *FAST)  # bob's log again, alice never
    assert redo.returncode == 0, redo.stderr
    assert json.loads(redo.stdout.strip().splitlines()[-1])["analysed"] == 1
    assert [w["index"] for w in windows_of(out / "s02.jsonl")] == list(range(N_WINDOWS))


def test_recordings_at_once_each_with_its_own_session_analyser(folder, tmp_path):
    """What --pool does with --jobs J (in process, without Ray): J recordings analysed
    on threads, each asking the pool for its own stream's analyser; every log whole."""
    from argparse import Namespace

    from live.worker import FakeAnalyser
    from live.engine import EngineConfig
    from live.study.analyse import StudyRun
    from live.study.recordings import list_recordings

    rec = tmp_path / "recordings"
    rec.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        shutil.copy(folder / "recordings" / "s01.mp4", rec / name)
    out = tmp_path / "out"
    out.mkdir()
    asked = []

    def analyser_for(session):
        asked.append(session)
        return FakeAnalyser(delay_s=0.05)

    run = StudyRun(out, list_recordings(rec), Namespace(face_models=None, plan=None),
                   EngineConfig(hop_s=0.5, window_s=2.0, every_window=True), analyser_for, jobs=2)
    counts = run.run()
    assert (counts["analysed"], counts["windows"]) == (3, 3 * N_WINDOWS)
    assert sorted(asked) == ["a", "b", "c"]
    for name in ("a", "b", "c"):
        assert [w["index"] for w in windows_of(out / f"{name}.jsonl")] == list(range(N_WINDOWS))


def test_pool_option_wiring_without_ray(folder, tmp_path, monkeypatch, capsys):
    """``--pool local:2`` (live.run's make_analyser starts the pool; replaced here by a
    stand-in, since Ray's start-up on 2 cores takes minutes): two recordings at once,
    each on its own pool stream, the pool closed at the end."""
    import live.run
    from live.worker import FakeAnalyser
    from live.study.__main__ import main

    class StandInPool:
        def __init__(self):
            self.streams, self.closed = [], False

        def analyser(self, stream_id=None):
            self.streams.append(stream_id)
            return FakeAnalyser(delay_s=0)

        def close(self):
            self.closed = True

    pool = StandInPool()

    def make_analyser(args):
        assert (args.pool, args.model) == ("local:2", str(model_dir))
        args.pool_handle = pool
        return pool.analyser()

    monkeypatch.setattr(live.run, "make_analyser", make_analyser)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    rec = tmp_path / "recordings"
    rec.mkdir()
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(folder / "recordings" / "s01.mp4", rec / name)
    out = tmp_path / "out"
    code = main(["analyse", str(rec), "--out", str(out), "--pool", "local:2", "--model", str(model_dir),
                 "--window", "2", "--hop", "0.5", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    assert sorted(s for s in pool.streams if s) == ["a", "b"] and pool.closed
    for name in ("a", "b"):
        assert [w["index"] for w in windows_of(out / f"{name}.jsonl")] == list(range(N_WINDOWS))


def test_ctrl_c_stops_cleanly_exit_130_no_partial_log(folder, tmp_path):
    rec = tmp_path / "recordings"
    rec.mkdir()
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(folder / "recordings" / "s01.mp4", rec / name)
    out = tmp_path / "out"
    slow = ["--analyser", "fake", "--fake-delay", "0.3", "--window", "2", "--hop", "0.5"]
    p = subprocess.Popen([sys.executable, "-m", "live.study", "analyse", str(rec), "--out", str(out), *slow],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # in the middle of a recording (its models loaded)
        if any(f.stat().st_size for f in out.glob(f"{PARTIAL_DIR}/*/*.jsonl")):
            break
        assert p.poll() is None
        time.sleep(0.02)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "error: interrupted" in err
    assert not (out / PARTIAL_DIR).exists()
    for log in out.glob("?.jsonl"):  # what is there is whole
        assert [w["index"] for w in windows_of(log)] == list(range(N_WINDOWS))
