"""live.study_log.withdraw: a participant's media (and on request records) deleted from a
study folder, the other participants' data untouched, one audit line per withdrawal;
a session another process writes is refused for a records purge."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from live.contract.appendfile import OutputLocked
from live.study_log import AUDIT_NAME, StudyLog, StudyLogError, new_run_id, read_jsonl, withdraw

ROOT = Path(__file__).resolve().parents[1]
FRAMES = np.zeros((2, 4, 4, 3), np.uint8)
AUDIO = np.zeros(160, np.float32)


def _window(log: StudyLog, run: int, index: int, report: str = "calm") -> dict:
    rec = {"run": run, "index": index, "start": float(index), "end": index + 1.0, "analysed": True,
           "label": "neutral", "self_report": report}
    return log.write_window(rec, FRAMES, AUDIO, 16_000)


def _study(root: Path) -> dict:
    """S1: P1 alone with media; S2: P2 then P1 (a resumed --log-session), both with media;
    S3: P2 alone. Returns each line written, by session."""
    out = {}
    with StudyLog(root, "S1", "P1", keep_media=True, consent=True) as log:
        run = new_run_id()
        out["S1"] = [_window(log, run, i) for i in range(2)]
        log.export_csv()
    with StudyLog(root, "S2", "P2", keep_media=True, consent=True) as log:
        out["S2"] = [_window(log, new_run_id(), 0, "=HYPERLINK(\"x\")")]
    with StudyLog(root, "S2", "P1", keep_media=True, consent=True) as log:
        out["S2"] += [_window(log, new_run_id(), 0)]
        log.export_csv()
    with StudyLog(root, "S3", "P2") as log:
        out["S3"] = [log.write({"run": 1, "index": 0})]
    return out


def _audit(root: Path) -> list[dict]:
    return read_jsonl(root / AUDIT_NAME)


def test_withdraw_media_deletes_only_that_participants_media_and_audits_it(tmp_path):
    lines = _study(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.glob("*.jsonl")}
    p2_media = tmp_path / lines["S2"][0]["media"]
    out = withdraw(tmp_path, "P1", reason="asked by email")
    gone = [lines["S1"][0]["media"], lines["S1"][1]["media"], lines["S2"][1]["media"]]
    assert sorted(out["media_deleted"]) == sorted(gone)
    assert not any((tmp_path / g).exists() for g in gone)
    assert not (tmp_path / "S1_media").exists()  # emptied folder removed
    assert p2_media.is_file()  # the other participant's recording stays
    assert {p: p.read_bytes() for p in tmp_path.glob("*.jsonl") if p.name != AUDIT_NAME} == before
    (line,) = _audit(tmp_path)
    assert line == out and line["participant"] == "P1" and line["reason"] == "asked by email"
    assert line["records"] is False and line["records_deleted"] == {} and line["sessions"] == ["S1", "S2"]
    assert line["at"] and line["by"]["pid"] == os.getpid()
    assert stat.S_IMODE((tmp_path / AUDIT_NAME).stat().st_mode) == 0o600


def test_withdraw_records_rewrites_logs_without_their_lines(tmp_path):
    lines = _study(tmp_path)
    p2_line = (tmp_path / "S2.jsonl").read_bytes().splitlines(keepends=True)[0]
    with open(tmp_path / "S2.jsonl", "ab") as f:  # a torn tail of P1's, left by a kill
        f.write(b'{"session": "S2", "participant": "P1", "index": 9, "lab')
    out = withdraw(tmp_path, "P1", records=True, reason="withdrew at the debrief")
    assert out["records_deleted"] == {"S1": 2, "S2": 2}  # S2: one whole line + the torn one
    assert not (tmp_path / "S1.jsonl").exists() and not (tmp_path / "S1.csv").exists()
    assert (tmp_path / "S2.jsonl").read_bytes() == p2_line  # the other's line byte for byte
    csv_text = (tmp_path / "S2.csv").read_text()
    assert "P1" not in csv_text and "P2" in csv_text
    assert stat.S_IMODE((tmp_path / "S2.jsonl").stat().st_mode) == 0o600
    assert (tmp_path / lines["S2"][0]["media"]).is_file()
    assert not any("P1" in p.read_text() for p in tmp_path.iterdir()
                   if p.is_file() and p.name != AUDIT_NAME)
    assert [a["records"] for a in _audit(tmp_path)] == [True]
    # and the session goes on for the others: a writer appends to the rewritten log
    with StudyLog(tmp_path, "S2", "P2") as log:
        log.write({"index": 1})
    assert [r["participant"] for r in read_jsonl(tmp_path / "S2.jsonl")] == ["P2", "P2"]


def test_older_lines_without_a_media_field_are_matched_by_run_and_index(tmp_path):
    media = tmp_path / "S1_media"
    media.mkdir()
    for name in ("window_001_00000.npz", "window_002_00000.npz"):
        (media / name).write_bytes(b"npz")
    old = [{"session": "S1", "participant": "P1", "run": 1, "index": 0},
           {"session": "S1", "participant": "P1", "run": 2, "index": 0},
           {"session": "S1", "participant": "P9", "run": 2, "index": 0},  # same name: whose?
           {"session": "S1", "participant": "P1", "run": 3, "index": 0, "media": "../../etc/passwd"}]
    (tmp_path / "S1.jsonl").write_text("".join(json.dumps(o) + "\n" for o in old))
    out = withdraw(tmp_path, "P1")
    assert out["media_deleted"] == ["S1_media/window_001_00000.npz"]
    assert (media / "window_002_00000.npz").is_file()  # shared by two participants' lines: kept


HOLDER = textwrap.dedent("""
    import sys, time
    from live.study_log import StudyLog
    log = StudyLog(sys.argv[1], "S2", "P1")
    log.write({"index": 5})
    print("ready", flush=True)
    time.sleep(600)
""")


def test_records_purge_of_a_session_another_process_writes_is_refused(tmp_path):
    _study(tmp_path)
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE,
                         text=True, cwd=ROOT)
    try:
        assert p.stdout.readline().strip() == "ready"
        before = sorted(x.name for x in tmp_path.rglob("*"))
        with pytest.raises(OutputLocked, match=f"S2.jsonl is being written by another process \\(pid {p.pid}"):
            withdraw(tmp_path, "P1", records=True)
        assert sorted(x.name for x in tmp_path.rglob("*")) == before  # all or nothing
        assert withdraw(tmp_path, "P1")["media_deleted"]  # media alone need no lock
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    assert withdraw(tmp_path, "P1", records=True)["records_deleted"]["S2"] == 2  # dead owner: taken over


@pytest.mark.parametrize("kw, match", [
    (dict(participant="../x"), "participant id"),
    (dict(participant="P1", reason=5), "reason"),
    (dict(participant="P1", reason="x" * 5000), "reason"),
    (dict(participant="P1", records="yes"), "records"),
])
def test_bad_withdrawal_arguments_are_refused(tmp_path, kw, match):
    with pytest.raises(StudyLogError, match=match):
        withdraw(tmp_path, **kw)
    assert not (tmp_path / AUDIT_NAME).exists()


def test_media_stored_apart_from_their_line_are_found_by_run_and_index(tmp_path):
    with StudyLog(tmp_path, "S1", "P1", keep_media=True, consent=True) as log:
        line = log.write({"run": 7, "index": 3})  # written, then its media stored apart
    # an older log's media file, stored apart from its line (the name its run and index give)
    (tmp_path / "S1_media").mkdir(exist_ok=True)
    np.savez(tmp_path / "S1_media" / "window_007_00003.npz", frames=FRAMES, audio=AUDIO, rate=16_000)
    assert line["media"] is None and (tmp_path / "S1_media" / "window_007_00003.npz").is_file()
    assert withdraw(tmp_path, "P1")["media_deleted"] == ["S1_media/window_007_00003.npz"]
