"""The study log survives the app being killed mid-session: start ``app.py`` with
``--video`` and logging on, SIGKILL it once a few windows are logged, read it back."""
from __future__ import annotations

import json
import re
import signal
import time

from live.study_log import read_jsonl
from tests.media import make_clip
from tests.test_app_server import APP_ARGS, START_TIMEOUT_S, start_app

KILL_AFTER = 3  # windows logged before the kill
CLIP_S = 12.0  # s: 11 windows (2 s, hop 1 s), far more than are done at the kill


def test_study_log_survives_sigkill(tmp_path):
    make_clip(tmp_path / "clip.mp4", seconds=CLIP_S, fps=10)
    log = tmp_path / "app.log"
    proc, _ = start_app(APP_ARGS + ["--video", str(tmp_path / "clip.mp4"), "--log-session", "S7",
                                    "--participant", "P7", "--log-dir", str(tmp_path / "sessions")],
                        log, tmp_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(re.findall(r"^logged window \d+$", log.read_text(), re.M)) < KILL_AFTER:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"fewer than {KILL_AFTER} windows logged:\n{log.read_text()}"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    printed = len(re.findall(r"^logged window \d+$", log.read_text(), re.M))
    assert "analysed" not in log.read_text(), "the clip finished before the kill: test proves nothing"
    path = tmp_path / "sessions" / "S7.jsonl"
    text = path.read_text()
    assert text.endswith("\n"), "a line was cut short"
    lines = [json.loads(x) for x in text.splitlines()]  # every line valid JSON
    assert lines == read_jsonl(path)
    # each "logged window" line is printed after its fsync: the file holds at least those,
    # and at most the one window that was being written at the kill
    assert printed <= len(lines) <= printed + 1, (printed, len(lines))
    assert [r["index"] for r in lines] == list(range(len(lines)))
    assert all(r["session"] == "S7" and r["participant"] == "P7" and r["analysed"] for r in lines)
    assert not (tmp_path / "sessions" / "S7_media").exists()
