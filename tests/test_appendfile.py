"""live.contract.appendfile: one writer per output (a real second process), torn tails repaired
and kept aside, failed writes named, owner-only files."""
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

from live.contract.appendfile import AppendFile, OutputLock, OutputLocked, private_dir, repair_tail
from live.contract.files import write_whole

HOLDER = textwrap.dedent("""
    import sys, time
    from live.contract.appendfile import AppendFile
    f = AppendFile(sys.argv[1])
    f.append('{"from": "holder"}')
    print("ready", flush=True)
    time.sleep(600)
""")


def _holder(path):
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert p.stdout.readline().strip() == "ready"
    return p


def test_second_writer_is_refused_naming_the_owner_and_a_dead_owners_lock_is_taken_over(tmp_path):
    log = tmp_path / "s.jsonl"
    p = _holder(log)
    try:
        with pytest.raises(OutputLocked, match=f"pid {p.pid}"):
            AppendFile(log)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    notes = []
    with AppendFile(log, notice=notes.append) as f:
        f.append('{"from": "second"}')
    assert any("took over" in n and f"pid {p.pid}" in n for n in notes), notes
    assert [json.loads(x)["from"] for x in log.read_text().splitlines()] == ["holder", "second"]
    assert not (tmp_path / "s.jsonl.lock").exists()  # released on close


def test_same_process_second_writer_is_refused_too(tmp_path):
    with AppendFile(tmp_path / "a.jsonl"):
        with pytest.raises(OutputLocked):
            AppendFile(tmp_path / "a.jsonl")
    AppendFile(tmp_path / "a.jsonl").close()  # free again


def test_folder_lock(tmp_path):
    with OutputLock(tmp_path) as lock:
        assert lock.path == tmp_path / ".lock"
        with pytest.raises(OutputLocked):
            OutputLock(tmp_path).acquire()


def test_torn_tail_is_cut_kept_aside_and_never_glued(tmp_path):
    log = tmp_path / "s.jsonl"
    log.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": 3, "tru')
    notes = []
    with AppendFile(log, notice=notes.append) as f:
        f.append_json({"a": 4})
    assert [json.loads(x)["a"] for x in log.read_text().splitlines()] == [1, 2, 4]
    assert (tmp_path / "s.jsonl.torn").read_bytes() == b'{"a": 3, "tru\n'
    assert len(notes) == 1 and "torn" in notes[0] and "s.jsonl.torn" in notes[0]
    assert repair_tail(log) == 0  # whole now: nothing to cut


def test_a_torn_file_without_any_newline_is_cut_whole(tmp_path):
    log = tmp_path / "s.jsonl"
    log.write_bytes(b'{"half')
    assert repair_tail(log, notice=lambda m: None) == 6
    assert log.read_bytes() == b""


def test_failed_write_names_the_file():
    f = AppendFile("/dev/full", lock=False)  # every write: ENOSPC
    try:
        with pytest.raises(OSError, match="could not write /dev/full") as e:
            f.append("x")
        assert e.value.errno == 28
    finally:
        f.close()


def test_files_and_folders_are_owner_only(tmp_path):
    d = private_dir(tmp_path / "study" / "s1")
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    with AppendFile(d / "x.jsonl") as f:
        f.append("{}")
    assert stat.S_IMODE((d / "x.jsonl").stat().st_mode) == 0o600
    with write_whole(d / "m.npz", "wb", private=True) as out:
        out.write(b"123")
    assert stat.S_IMODE((d / "m.npz").stat().st_mode) == 0o600
