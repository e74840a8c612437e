"""Study data you can trust, below the browser: consent follows the page for every log
(the app's --log-session one too) and withdrawing it deletes the stored media;
owner-only files; run ids unique across processes and media never overwritten; one
writer per session (a second process is refused naming the owner, a killed one's lock
taken over); a torn tail repaired on resume; a full disk (a real tmpfs, and an
injected ENOSPC) is an error the caller sees, naming the file, with no torn line; and
the page's handlers refuse badly typed input."""
from __future__ import annotations

import csv
import errno
import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import app
import live.contract.appendfile as appendfile
from live.contract.appendfile import OutputLocked
from live.engine import Engine, EngineConfig
from live.worker import FakeAnalyser
from live.page.file_analysis import WindowsNotLogged, analyse_at_start, analyse_video
from live.page.render import model_banner
from live.page.session import PageSession
from live.sources import FileSource, SourceError
from live.study_log import AUDIT_NAME, LogOwners, StudyLog, StudyLogError, new_run_id, read_jsonl, write_csv
from model.serve.serving import ModelHolder
from tests.media import make_clip

ROOT = Path(__file__).resolve().parents[1]
FRAMES = np.zeros((2, 8, 8, 3), np.uint8)
AUDIO = np.zeros(1600, np.float32)
TMPFS_SIZE = "200k"  # a small disk that fills within a few windows' media


@pytest.fixture(scope="module")
def tiny():
    holder = ModelHolder("tiny", max_new_tokens=4)
    holder.start().join()
    assert holder.state == "ready", holder.message
    return holder


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    make_clip(path, seconds=3.0, fps=10)
    return path


def window(run: int, index: int, **kw) -> dict:
    return {"run": run, "index": index, "start": float(index), "end": index + 2.0, "analysed": True, **kw}


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs mounted at tmp_path/disk (unmounted after); skipped, saying why,
    where mounting is not permitted."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); "
                    "the injected-ENOSPC tests cover the same path")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path) -> None:
    """Fill ``disk`` up to the last byte."""
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC


# ------------------------------------------------------------------ consent and files
def test_consent_follows_the_page_for_the_apps_own_log_and_withdrawal_deletes_media(tiny, tmp_path):
    shared = StudyLog(tmp_path, "S1", "P1", keep_media=True, consent=True)  # --keep-media --consent
    first = shared.write_window(window(new_run_id(), 0), FRAMES, AUDIO, 16_000)
    assert (tmp_path / first["media"]).is_file()
    tab, other_tab = (PageSession(tiny, log_root=tmp_path, shared_log=shared, owners=LogOwners())
                      for _ in range(2))
    banner = tab.study.set_consent(False)  # the page's box unticked
    assert "no raw video or audio" in banner and not shared.consent and not shared.keep_media
    assert not (tmp_path / first["media"]).exists()  # what was stored is deleted
    assert "1 stored media file of participant P1 deleted" in tab.study.notice
    (audit,) = read_jsonl(tmp_path / AUDIT_NAME)
    assert audit["participant"] == "P1" and audit["media_deleted"] == [first["media"]]
    assert audit["reason"] == "consent withdrawn on the page"
    # every tab writing the app's log records it from now on, and stores no media
    line = other_tab.study.log.write_window(window(new_run_id(), 1), FRAMES, AUDIO, 16_000)
    assert line["consent"] is False and line["media"] is None
    assert not (tmp_path / "S1_media").exists()
    with pytest.raises(StudyLogError, match="true or false"):
        tab.study.set_consent("false")  # a string is not a consent
    shared.close()


def test_study_files_are_owner_only(tmp_path):
    root = tmp_path / "study"
    with StudyLog(root, "S1", "P1", keep_media=True, consent=True) as log:
        line = log.write_window(window(new_run_id(), 0), FRAMES, AUDIO, 16_000)
        csv_path = log.export_csv()
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(root) == 0o700 and mode(root / "S1_media") == 0o700
    assert mode(root / "S1.jsonl") == 0o600 and mode(root / line["media"]) == 0o600 and mode(csv_path) == 0o600


def test_two_runs_on_one_session_never_overwrite_each_other(tmp_path):
    """Two processes one after the other (a restart) on one session with media, each
    writing windows 0-2: six lines, six media files, six distinct (run, index)."""
    script = textwrap.dedent("""
        import sys, numpy as np
        from live.study_log import StudyLog, new_run_id
        with StudyLog(sys.argv[1], "S1", "P1", keep_media=True, consent=True) as log:
            run = new_run_id()
            for i in range(3):
                log.write_window({"run": run, "index": i}, np.zeros((1, 4, 4, 3), np.uint8), None, 16000)
    """)
    for _ in range(2):
        subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, check=True)
    lines = read_jsonl(tmp_path / "S1.jsonl")
    assert len({(r["run"], r["index"]) for r in lines}) == len(lines) == 6
    assert len(list((tmp_path / "S1_media").glob("*.npz"))) == 6
    assert all((tmp_path / r["media"]).is_file() for r in lines)
    with StudyLog(tmp_path, "S1", "P1", keep_media=True, consent=True) as log:
        before = (tmp_path / lines[0]["media"]).read_bytes()
        with pytest.raises(StudyLogError, match="not overwritten"):
            log.write_window({"run": lines[0]["run"], "index": 0}, FRAMES, AUDIO, 16_000)
    assert (tmp_path / lines[0]["media"]).read_bytes() == before and len(read_jsonl(tmp_path / "S1.jsonl")) == 6


HOLDER = textwrap.dedent("""
    import sys, time
    from live.study_log import StudyLog
    log = StudyLog(sys.argv[1], "S9", "P9")
    log.write({"index": 0})
    print("ready", flush=True)
    time.sleep(600)
""")


def test_a_second_process_on_a_session_is_refused_naming_the_owner(tiny, tmp_path, capsys):
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE,
                         text=True, cwd=ROOT)
    try:
        assert p.stdout.readline().strip() == "ready"
        with pytest.raises(OutputLocked, match=f"pid {p.pid}"):
            StudyLog(tmp_path, "S9", "P10")
        tab = PageSession(tiny, log_root=tmp_path)
        with pytest.raises(StudyLogError, match=f"another process \\(pid {p.pid}"):
            tab.study.set_logging(True, "P10", "S9")
        assert app.main(["--log-session", "S9", "--participant", "P10", "--log-dir", str(tmp_path),
                         "--log-file", str(tmp_path / "app.log"), "--port", str(_free_port())]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and f"pid {p.pid}" in err[0]
    finally:
        p.send_signal(signal.SIGKILL)  # kill -9: the lock dies with it
        p.wait(10)
    with StudyLog(tmp_path, "S9", "P10") as log:  # taken over
        log.write({"index": 1})
    assert [r["participant"] for r in read_jsonl(tmp_path / "S9.jsonl")] == ["P9", "P10"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_resuming_a_log_with_a_torn_tail_repairs_it_first(tmp_path):
    with StudyLog(tmp_path, "S1", "P1") as log:
        log.write({"index": 0})
    with open(tmp_path / "S1.jsonl", "ab") as f:
        f.write(b'{"session": "S1", "index": 1, "lab')  # a process killed mid-write
    with StudyLog(tmp_path, "S1", "P1") as log:  # resume
        log.write({"index": 2})
    assert [r["index"] for r in read_jsonl(tmp_path / "S1.jsonl")] == [0, 2]  # strict: every line whole
    assert b'"lab' in (tmp_path / "S1.jsonl.torn").read_bytes()


# ----------------------------------------------------------------------- a full disk
def test_full_disk_study_log_on_a_tmpfs(tiny, clip, tmpfs):
    """A real small disk: the study log's writes fail naming the file, no torn line is
    left, and a File-tab analysis says which windows were not stored."""
    log = StudyLog(tmpfs / "study", "S1", "P1", keep_media=True, consent=True)
    rng = np.random.default_rng(0)
    with pytest.raises((OSError, StudyLogError)) as err:
        for i in range(1000):  # incompressible media fill 200k within a few windows
            log.write_window(window(new_run_id(), i), rng.integers(0, 255, (4, 32, 32, 3), np.uint8),
                             AUDIO, 16_000)
    assert str(tmpfs) in str(err.value)
    assert read_jsonl(log.path)  # strict: whole lines only
    fill(tmpfs)
    with pytest.raises(WindowsNotLogged, match=r"^[1-3] of 3 windows of clip.mp4 were analysed but NOT stored") as e:
        analyse_video(clip, tiny, 1.0, 1.0, study=log, name="clip.mp4")
    assert str(log.path) in str(e.value) and "No space left" in str(e.value)
    assert (log.path.read_bytes() or b"\n").endswith(b"\n")
    log.close()


def test_live_run_on_a_full_disk_names_the_file_and_leaves_no_torn_line(clip, tmpfs):
    out = tmpfs / "out"
    _fill_but_two_pages(tmpfs)
    r = subprocess.run([sys.executable, "-m", "live.run", str(clip), "--out", str(out), "--analyser", "fake",
                        "--fake-delay", "0", "--every-window", "--no-progress"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: could not write ") and str(out) in last and "No space left" in last
    for name in ("frames", "speech", "windows"):
        text = (out / f"{name}.jsonl").read_bytes()
        assert not text or text.endswith(b"\n"), name  # no torn line
        [json.loads(x) for x in text.splitlines()]


def _fill_but_two_pages(disk: Path) -> None:
    """Leave two pages free on ``disk``: the run's lock and its first log lines fit, a
    later line does not."""
    fill(disk)
    filler = disk / "filler"
    os.truncate(filler, max(0, filler.stat().st_size - 2 * 4096))  # the lock and one log page


def _half_then_enospc(fd, data, path):
    """An injected full disk: half of the line is written, then ENOSPC."""
    os.write(fd, bytes(data[: len(data) // 2]))
    raise OSError(errno.ENOSPC, f"could not write {path}: No space left on device")


def test_injected_enospc_cuts_the_partial_line_and_the_file_tab_reports_windows(tiny, clip, tmp_path,
                                                                              monkeypatch):
    log = StudyLog(tmp_path, "S1", "P1")
    log.write({"index": -1})
    monkeypatch.setattr(appendfile, "_write_all", _half_then_enospc)
    with pytest.raises(OSError, match=f"could not write {tmp_path / 'S1.jsonl'}"):
        log.write({"index": 0})
    assert len(read_jsonl(log.path)) == 1  # the half line was cut: no torn line
    with pytest.raises(WindowsNotLogged, match=r"windows 0, 1, 2\)"):
        analyse_video(clip, tiny, 1.0, 1.0, study=log, name="clip.mp4")
    monkeypatch.undo()
    log.write({"index": 9})
    assert [r["index"] for r in read_jsonl(log.path)] == [-1, 9]
    log.close()


def test_a_failing_window_callback_is_not_swallowed(clip):
    """The analyser worker keeps the result callback's exception; the engine raises it."""
    def on_window(ev):
        if ev.analysed:
            raise OSError(errno.ENOSPC, "could not write x.jsonl: No space left on device")

    eng = Engine(FileSource(clip), FakeAnalyser(0.0), EngineConfig(window_s=1.0, hop_s=1.0, every_window=True),
                 on_window=on_window)
    with pytest.raises(OSError, match="x.jsonl"):
        eng.run()
    assert eng.worker.callback_errors >= 1


# ------------------------------------------------------------------- the page's input
def _handlers(tiny, tmp_path):
    demo = app.build_ui(tiny, app.parse_args(["--log-dir", str(tmp_path)]))
    return {bf.fn.__name__: bf.fn for bf in demo.fns.values() if bf.fn is not None}


def test_page_handlers_refuse_badly_typed_input(tiny, tmp_path, caplog):
    import gradio as gr

    fns = _handlers(tiny, tmp_path)
    s, req = PageSession(tiny, log_root=tmp_path, owners=LogOwners()), SimpleNamespace(session_hash="tab1")
    caplog.set_level(logging.INFO, logger="app")
    huge = "S" * 100_000
    assert fns["on_logging"]("yes", "P1", "S1", False, False, s, request=req) is False  # a string is no tick
    assert fns["on_logging"](True, "P1", huge, False, False, s, request=req) is False
    assert s.study.log is None and not list(tmp_path.glob("*.jsonl"))
    assert max(len(r.getMessage()) for r in caplog.records) < 1000  # the 100 KB id is not echoed
    for call in (lambda: fns["on_self_report"](["happy"], s, request=req),
                 lambda: fns["on_consent"]("no", s, request=req),
                 lambda: fns["on_start"]("2", 1.0, "always", s, request=req),
                 lambda: fns["on_start"](2.0, 1.0, "sometimes", s, request=req),
                 lambda: fns["on_reload"]({"plan": "nf4"}),
                 lambda: fns["analyse_file"](123, 2.0, 1.0, "always", s)):
        with pytest.raises(gr.Error):
            call()
    assert s.study.self_report is None and not s.runner.running


def test_file_tab_windows_carry_the_self_report_and_errors_name_the_file(tiny, clip, tmp_path):
    import gradio as gr

    fns = _handlers(tiny, tmp_path)
    s, req = PageSession(tiny, log_root=tmp_path, owners=LogOwners()), SimpleNamespace(session_hash="tab1")
    assert fns["on_logging"](True, "P1", "S1", False, False, s, request=req) is True
    fns["on_self_report"]("happy", s, request=req)
    status = fns["analyse_file"](str(clip), 1.0, 1.0, "always", s)[0]
    assert "clip.mp4" in status
    lines = read_jsonl(tmp_path / "S1.jsonl")
    assert lines and all(r["self_report"] == "happy" and r["self_report_at"] for r in lines)
    picture = tmp_path / "upload" / "holiday.mp4"
    picture.parent.mkdir()
    from PIL import Image

    Image.new("RGB", (32, 32)).save(picture, format="PNG")  # a picture renamed .mp4
    with pytest.raises(gr.Error, match="holiday.mp4 is a picture") as e:
        fns["analyse_file"](str(picture), 1.0, 1.0, "always", s)
    assert str(picture.parent) not in e.value.message
    with pytest.raises(SourceError, match="is a picture"):
        analyse_video(picture, tiny)
    s.close()


def test_csv_export_escapes_formulas(tmp_path):
    recs = [{"self_report": t, "index": i} for i, t in enumerate(["=HYPERLINK(\"http://x\")", "+1", "-1+2",
                                                                 "@SUM(A1)", "calm"])]
    recs.append({"self_report": None, "index": -5})
    rows = list(csv.DictReader(write_csv(recs, tmp_path / "x.csv").open()))
    assert [r["self_report"] for r in rows[:5]] == ["'=HYPERLINK(\"http://x\")", "'+1", "'-1+2", "'@SUM(A1)", "calm"]
    assert rows[5]["index"] == "-5"  # a number is not text


# ------------------------------------------------------------------ what a newcomer met
def test_port_in_use_is_one_line_advising_port(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert app.main(["--port", str(port), "--log-file", str(tmp_path / "app.log")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"127.0.0.1:{port}" in err[0] and "--port" in err[0]


def test_banner_is_honest_about_the_untrained_model_and_the_hub(monkeypatch):
    holder = SimpleNamespace(state="ready", untrained=True, status=lambda: "tiny (untrained)")
    assert model_banner(holder).startswith("⚠️") and "✅" not in model_banner(holder)
    from huggingface_hub import constants

    from model.serve.serving import hub_reachable

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://no-such-host.invalid")
    ok, why = hub_reachable(timeout_s=3.0)
    assert not ok and "[Errno" not in why


def test_video_at_start_says_logged_only_with_a_log(tiny, clip, tmp_path, capsys):
    startup: dict = {}
    analyse_at_start(tiny, str(clip), 1.0, 1.0, "always", startup, None, tmp_path / "exports")
    out = capsys.readouterr().out
    assert "analysed" in out and "logged window" not in out and startup["outputs"]
    with StudyLog(tmp_path, "S1", "P1") as log:
        analyse_at_start(tiny, str(clip), 1.0, 1.0, "always", {}, log, tmp_path / "exports")
    assert capsys.readouterr().out.count("logged window") == 3


def test_live_tab_reports_windows_not_stored(tiny, tmp_path, monkeypatch):
    """A full disk while the live tab logs: the banner says how many windows were not
    stored, and keeps saying it."""
    from live.engine import WindowEvent
    from tests.test_live_engine import fake_window

    s = PageSession(tiny, log_root=tmp_path)
    s.study.set_logging(True, "P1", "S1")
    s.runner.open_run = s.runner.run_no = new_run_id()
    monkeypatch.setattr(appendfile, "_write_all", _half_then_enospc)
    for i in range(2):
        s._on_window(WindowEvent(fake_window(i), False, None, "gated"), s.runner.run_no)
    (warning,) = s.warnings()
    assert "study log write failed for 2 window(s), last window 1" in warning and "S1.jsonl" in warning
    monkeypatch.undo()
    s.close()


def test_api_client_sees_a_full_disk(clip, tmpfs, tmp_path):
    """/analyse_file through gradio_client with the app's --log-session log on a full
    disk: the client gets an error naming the windows not stored, not a success."""
    from gradio_client import Client, handle_file

    from tests.test_app_server import APP_ARGS, START_TIMEOUT_S, start_app, stop, wait_for_line

    log = tmp_path / "app.log"
    proc, url = start_app(APP_ARGS + ["--log-session", "S1", "--participant", "P1", "--log-dir",
                                      str(tmpfs / "study")], log, tmp_path)
    try:
        wait_for_line(log, "model: tiny", START_TIMEOUT_S)
        fill(tmpfs)
        with pytest.raises(Exception, match="windows of clip.mp4 were analysed but NOT stored"):
            Client(url, verbose=False).predict(handle_file(str(clip)), 1.0, 1.0, "always",
                                               api_name="/analyse_file")
    finally:
        stop(proc)
    assert "Traceback" not in log.read_text()


def test_gradio_temp_folder_is_private_and_a_killed_apps_folder_is_removed(tmp_path, monkeypatch):
    from live.page.hosting import TEMP_ENV, TEMP_PREFIX, discard_upload, private_temp_dir

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{TEMP_PREFIX}{dead.pid}-abc"  # left by an app killed with -9
    (stale / "h").mkdir(parents=True)
    (stale / "h" / "audio.wav").write_bytes(b"RIFF")
    mine = tmp_path / f"{TEMP_PREFIX}{os.getpid()}-live"  # a running app's: kept
    mine.mkdir()
    monkeypatch.setenv(TEMP_ENV, str(tmp_path))
    folder = private_temp_dir()
    assert os.environ[TEMP_ENV] == str(folder) and folder.parent == tmp_path
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert not stale.exists() and mine.exists()
    upload = folder / "hash" / "clip.mp4"
    upload.parent.mkdir()
    upload.write_bytes(b"x")
    outside = tmp_path / "operator.mp4"
    outside.write_bytes(b"x")
    assert discard_upload(upload) and not upload.parent.exists()
    assert not discard_upload(outside) and outside.exists()  # the operator's own file is left alone
    shutil.rmtree(folder)


def test_a_new_tab_shows_the_logs_consent(tiny, tmp_path):
    """Consent withdrawn in one tab of the --log-session log: a tab opened afterwards
    shows the box unticked (the log's state), not --consent's start value."""
    shared = StudyLog(tmp_path, "S1", "P1", keep_media=True, consent=True)
    demo = app.build_ui(tiny, app.parse_args(["--log-dir", str(tmp_path), "--consent", "--keep-media"]),
                        shared_log=shared)
    on_load = next(bf.fn for bf in demo.fns.values() if bf.fn is not None and bf.fn.__name__ == "on_load")
    tab = PageSession(tiny, log_root=tmp_path, shared_log=shared)
    assert on_load(tab)[:2] == (True, True)
    tab.study.set_consent(False)
    assert on_load(PageSession(tiny, log_root=tmp_path, shared_log=shared))[:2] == (True, False)
    shared.close()
