"""The app's command line and server as a user (and an attacker) meets them: real
``python app.py`` subprocesses. Bad options are refused at once with one line; a page
reachable from other machines needs a login; with ``--log-session`` the API's windows
go to the study log; with the hub unreachable the tiny model serves, saying what to do."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from live.contract.cli import EXIT_USAGE
from live.study_log import read_jsonl
from tests.media import make_clip
from tests.test_app_server import APP_ARGS, ROOT, START_TIMEOUT_S, free_port, start_app, stop, wait_for_line

CLI_TIMEOUT_S = 120  # s for a refused start (imports only, no model; 2 busy cores)


def run_app(args: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    # no GPU visible, so `--device cuda` is refused the same way on any machine
    env = {k: v for k, v in os.environ.items() if k != "OMNI_EMOTION_AUTH"} | {"CUDA_VISIBLE_DEVICES": ""} | env
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S)


@pytest.mark.parametrize("args, needles", [
    (["--plan", "foo"], ["'foo' is not a plan", "none", "nf4"]),
    (["--window", "nan"], ["--window", "nan"]),
    (["--hop", "0"], ["--hop", "> 0"]),
    (["--device", "cuda"], ["--device"]),
    (["--host", "0.0.0.0"], ["--host 0.0.0.0", "--auth-file"]),
    (["--share"], ["--share", "OMNI_EMOTION_AUTH"]),
    (["--keep-media", "--log-session", "S1", "--participant", "P1"], ["--keep-media", "consent", "--consent"]),
    (["--host", "0.0.0.0", "--auth-file", "missing.txt"], ["missing.txt"]),
    (["--host", "0.0.0.0", "--auth-file", "bad.txt"], ["bad.txt, line 2", "user:password"]),
])
def test_refused_at_start_with_one_line(tmp_path, args, needles):
    (tmp_path / "bad.txt").write_text("# logins\nadmin-without-password\n")
    r = run_app(args, tmp_path)
    assert r.returncode == EXIT_USAGE, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert all(n in lines[0] for n in needles), lines[0]
    assert "Traceback" not in r.stderr + r.stdout and "Running on" not in r.stdout
    assert "without-password" not in r.stderr  # a bad login line is never echoed


@pytest.fixture(scope="module")
def exposed(tmp_path_factory):
    """The app bound to all interfaces with a login and an app-wide study log."""
    tmp = tmp_path_factory.mktemp("exposed")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMNI_EMOTION_AUTH="researcher:s3cret-pass")
    proc, url = start_app(APP_ARGS + ["--host", "0.0.0.0", "--log-dir", str(tmp / "sessions"),
                                      "--log-session", "S20", "--participant", "P20",
                                      "--log-file", str(tmp / "runs" / "app.log")],
                          tmp / "out.log", tmp, env=env)
    wait_for_line(tmp / "out.log", "model: tiny", START_TIMEOUT_S)
    yield url, tmp
    stop(proc)


def test_exposed_page_needs_the_login(exposed):
    from gradio_client import Client

    url, _ = exposed
    with pytest.raises(Exception):
        Client(url, verbose=False)  # no login: not even the API description
    with pytest.raises(Exception):
        Client(url, auth=("researcher", "wrong"), verbose=False)
    api = Client(url, auth=("researcher", "s3cret-pass"), verbose=False).view_api(
        print_info=False, return_format="dict")
    assert "/analyse_file" in api["named_endpoints"]


def test_api_analysis_writes_the_app_study_log(exposed, tmp_path):
    from gradio_client import Client, handle_file

    url, tmp = exposed
    make_clip(tmp_path / "clip.mp4", seconds=4.0, fps=10)
    client = Client(url, auth=("researcher", "s3cret-pass"), verbose=False)
    _status, _table, _plot, jsonl, _csv = client.predict(
        handle_file(str(tmp_path / "clip.mp4")), 2.0, 1.0, "always", api_name="/analyse_file")
    returned = [json.loads(x) for x in Path(jsonl).read_text().splitlines()]
    logged = read_jsonl(tmp / "sessions" / "S20.jsonl")
    assert [r["index"] for r in logged] == [r["index"] for r in returned] == [0, 1, 2]
    assert all(r["session"] == "S20" and r["participant"] == "P20" for r in logged)
    assert all(r["source"].endswith("clip.mp4") for r in logged)
    # a broken upload is a one-line user error: no traceback in the app's output
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video" * 100)
    with pytest.raises(Exception, match="Cannot analyse this upload"):
        client.predict(handle_file(str(bad)), 2.0, 1.0, "always", api_name="/analyse_file")
    assert "Traceback" not in (tmp / "out.log").read_text()
    assert "broken.mp4" in (tmp / "runs" / "app.log").read_text()


def test_offline_start_falls_back_to_tiny_and_says_what_to_do(tmp_path):
    """No HF_HUB_OFFLINE and an endpoint nobody listens on: the hub is probed once and
    the tiny model serves; the banner advises building a checkpoint for --model DIR."""
    closed = free_port()  # bound and released: nothing listens there
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env |= {"HF_ENDPOINT": f"http://127.0.0.1:{closed}", "HF_HOME": str(tmp_path / "hf")}
    proc, _ = start_app(["--max-new-tokens", "4", "--log-dir", str(tmp_path / "s")],
                        tmp_path / "out.log", tmp_path, env=env)
    try:
        wait_for_line(tmp_path / "out.log", "model: tiny", START_TIMEOUT_S)
    finally:
        stop(proc)
    line = next(x for x in (tmp_path / "out.log").read_text().splitlines() if x.startswith("model: "))
    assert f"cannot connect to 127.0.0.1:{closed}" in line
    assert "model.checkpoint.build" in line and "--model DIR" in line
    assert "Traceback" not in (tmp_path / "out.log").read_text()
