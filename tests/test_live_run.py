"""live.run as a real subprocess: one-line errors naming the file or option, the
exit-code convention of live.contract.cli (2: bad input found before any work, 1: a failure
while working), and an existing --out folder refused before any model loads."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from live.contract.cli import EXIT_RUNTIME, EXIT_USAGE
from live.contract.media import MAX_WINDOW_S
from tests.media import cached_clip

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "live.run", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def one_error_line(r) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = [l for l in r.stderr.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def corrupted_copy(src: str, dst: Path) -> Path:
    """A real mp4 with random bytes over its middle third: it opens, then fails to
    decode part-way."""
    data = bytearray(Path(src).read_bytes())
    n = len(data)
    data[n // 3 : 2 * n // 3] = bytes((i * 7919 + 13) % 251 for i in range(n // 3, 2 * n // 3))
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("opt,value,needle", [
    ("--hop", "nan", "--hop must be a finite number of seconds > 0, got nan"),
    ("--window", "inf", "--window must be a finite number of seconds > 0, got inf"),
    ("--hop", "-1", "--hop must be a finite number of seconds > 0, got -1.0"),
    ("--window", "0", "--window must be a finite number of seconds > 0, got 0.0"),
    ("--window", str(MAX_WINDOW_S + 1), f"--window must be at most {MAX_WINDOW_S:g} s"),
])
def test_bad_window_or_hop_is_a_usage_error(tmp_path, opt, value, needle):
    r = run_cli(cached_clip("talk")["path"], "--out", tmp_path / "o", opt, value)
    assert r.returncode == EXIT_USAGE
    assert needle in one_error_line(r)
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_missing_and_non_media_files_are_named(tmp_path):
    r = run_cli(tmp_path / "nope.mp4", "--out", tmp_path / "o")
    assert r.returncode == EXIT_USAGE and "nope.mp4" in one_error_line(r)
    text = tmp_path / "notes.mp4"
    text.write_text("these are my notes, not a video\n" * 50)
    r = run_cli(text, "--out", tmp_path / "o")
    line = one_error_line(r)
    assert r.returncode == EXIT_USAGE and "notes.mp4" in line and "not a media file" in line
    assert "Errno" not in line


def test_decode_error_mid_file_names_the_file(tmp_path):
    bad = corrupted_copy(cached_clip("talk")["path"], tmp_path / "damaged.mp4")
    r = run_cli(bad, "--out", tmp_path / "o")
    line = one_error_line(r)
    assert r.returncode == EXIT_RUNTIME, r.stderr
    assert "damaged.mp4" in line and "cannot decode after" in line and "Errno" not in line
    assert "avcodec" not in line


def test_existing_out_is_refused_before_the_model_loads(tmp_path):
    g = cached_clip("talk")
    out = tmp_path / "o"
    r = run_cli(g["path"], "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    before = (out / "windows.jsonl").read_text()
    # a model folder that cannot load: the --out check must come first
    junk_model = tmp_path / "model"
    junk_model.mkdir()
    r = run_cli(g["path"], "--out", out, "--model", junk_model)
    line = one_error_line(r)
    assert r.returncode == EXIT_USAGE and str(out) in line and "--overwrite" in line
    assert (out / "windows.jsonl").read_text() == before  # untouched
    r = run_cli(g["path"], "--out", out, "--overwrite", "--hop", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["windows"] == 2  # ends at 4 and 6 s
    # an --out that is a file
    f = tmp_path / "file.txt"
    f.write_text("x")
    r = run_cli(g["path"], "--out", f)
    assert r.returncode == EXIT_USAGE and "is a file" in one_error_line(r)

