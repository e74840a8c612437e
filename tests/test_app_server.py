"""The app as a server: ``python app.py`` in a subprocess (tiny model), driven by
``gradio_client`` (the /analyse_file endpoint) and by a real browser (Debian's
chromium through Playwright, fed a fake camera + microphone from generated media).
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from live.study_log import read_jsonl
from tests.media import clip_frames, make_clip, speak, write_wav, write_y4m

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 90  # s for the app to import torch/gradio and serve the page (2 cores)
BROWSER_TIMEOUT_S = 60  # s for a face box, a window result and explanation text
# ms for one page step (a click, a button or a line of text showing): a wait returns as
# soon as it holds, so only a loaded machine (chromium + the app on 2 busy cores) waits long
PAGE_STEP_MS = 120_000
CHROMIUM = "/usr/bin/chromium"
APP_ARGS = ["--model", "tiny", "--window", "2", "--hop", "1", "--max-new-tokens", "8"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_page(cmd: list[str], log_path: Path, cwd: Path, env: dict) -> tuple[subprocess.Popen, str]:
    """Run ``cmd + ["--port", P]`` (a Gradio page) on a free port P; (process, url) once
    it answers HTTP 200. Its output goes to ``log_path``, quoted if it exits or stalls."""
    port = free_port()
    env = dict(env, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    log = open(log_path, "w")
    proc = subprocess.Popen([*cmd, "--port", str(port)], cwd=cwd, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{cmd[1]} exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"{cmd[1]} did not serve {url} within {START_TIMEOUT_S} s:\n{log_path.read_text()}")


def stop(proc: subprocess.Popen) -> None:
    """Terminate a page's process; kill it if it does not end within 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def start_app(args: list[str], log_path: Path, cwd: Path,
              env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """Start app.py with ``args`` on a free port; (process, url) once it serves.
    ``env``: the environment to start from (default: ours, offline)."""
    base = dict(os.environ, HF_HUB_OFFLINE="1") if env is None else env
    return serve_page([sys.executable, str(ROOT / "app.py"), *args], log_path, cwd, base)


def wait_for_line(log_path: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log_path.read_text():
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in the app's output after {timeout} s:\n{log_path.read_text()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app")
    proc, url = start_app(APP_ARGS + ["--log-dir", str(tmp / "sessions")], tmp / "app.log", tmp)
    wait_for_line(tmp / "app.log", "model: tiny", START_TIMEOUT_S)
    yield url, tmp
    stop(proc)


def test_binds_localhost_only(server):
    url, _ = server
    assert url.startswith("http://127.0.0.1:")
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    # not reachable through another local address (e.g. the machine's hostname's IP)
    others = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    others.discard("127.0.0.1")
    for ip in others - {"127.0.1.1"}:
        with pytest.raises(OSError):
            socket.create_connection((ip, port), timeout=1).close()


def test_file_endpoint_with_gradio_client(server, tmp_path):
    from gradio_client import Client, handle_file

    url, _ = server
    info = make_clip(tmp_path / "clip.mp4", seconds=5.0, fps=15)
    client = Client(url, verbose=False)
    status, table, _plot, jsonl, csv_path = client.predict(
        handle_file(str(tmp_path / "clip.mp4")), 2.0, 1.0, "always", api_name="/analyse_file")
    records = [json.loads(line) for line in Path(jsonl).read_text().splitlines()]
    # window 2 s, hop 1 s over a 5 s clip: ends at 2, 3, 4, 5 s; every window analysed
    assert [r["index"] for r in records] == [0, 1, 2, 3], records
    assert all(r["analysed"] and r["error"] is None for r in records)
    assert [r["end"] for r in records] == pytest.approx([2.0, 3.0, 4.0, 5.0], abs=0.1)
    assert all(r["face_track"] is not None for r in records)  # the face was tracked
    speechy = [r for r in records if r["start"] < info["speech"][0][1] and r["end"] > info["speech"][0][0]]
    assert any(r["speech_ratio"] > 0 for r in speechy)
    assert all(isinstance(r["explanation"], str) and r["explanation"] for r in records)
    assert "4 windows, 4 analysed" in status
    assert len(table["data"]) == 4
    csv_lines = Path(csv_path).read_text().splitlines()
    assert csv_lines[0].startswith("session,participant") and len(csv_lines) == 5


def test_file_endpoint_rejects_unreadable_upload(server, tmp_path):
    from gradio_client import Client, handle_file

    url, _ = server
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match="Cannot analyse this upload"):
        client.predict(handle_file(str(bad)), 2.0, 1.0, "always", api_name="/analyse_file")


def open_study_form(page, url: str, participant: str, session: str) -> None:
    """Load the page, wait until it is live (the refresh timer has filled the stats), open
    the study-log accordion and fill in the ids. The fields are read back after a
    moment: a field filled while Gradio still mounts the accordion can be reset (seen
    under load: the participant id came back empty and the log was refused for it)."""
    page.goto(url, wait_until="load")
    page.locator("#stats", has_text="frames/s in").wait_for(timeout=PAGE_STEP_MS)
    page.get_by_text("Study log (opt-in)").click()
    fields = {"participant id": participant, "session id": session}
    for _ in range(3):
        for label, value in fields.items():
            page.get_by_label(label).fill(value)
        page.wait_for_timeout(300)
        if all(page.get_by_label(k).input_value() == v for k, v in fields.items()):
            return
    raise AssertionError(f"the study form did not keep {fields}")


def wait_for_banner(page, text: str, tmp: Path, timeout_s: float = 30.0) -> None:
    """Wait for ``text`` in the page's banner; on timeout, fail with what the page and
    the app's logs (in ``tmp``) show (a lost event and a slow server look alike otherwise)."""
    try:
        page.locator("#banner", has_text=text).wait_for(timeout=timeout_s * 1000)
    except Exception as e:
        boxes = page.evaluate("() => [...document.querySelectorAll('input[type=checkbox]')]"
                              ".map(b => (b.closest('label')?.innerText || '?').slice(0, 40) + ': ' + b.checked)")
        texts = page.evaluate("() => [...document.querySelectorAll('input[type=text], textarea')]"
                              ".map(b => (b.closest('label')?.innerText || '?').slice(0, 20) + ': ' + b.value)")
        raise AssertionError(f"{text!r} not in the banner after {timeout_s} s ({type(e).__name__}); banner: "
                             f"{page.locator('#banner').inner_text()!r}; boxes: {boxes}; texts: {texts}; app log:\n"
                             f"{(tmp / 'runs' / 'app.log').read_text()[-3000:]}") from None


def _green_pixels(png: bytes) -> int:
    """Pixels of the face-box colour (pure green) in a PNG screenshot."""
    import io

    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int(((img[..., 1] > 200) & (img[..., 0] < 60) & (img[..., 2] < 60)).sum())


def test_real_browser_webcam_and_microphone(server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, tmp = server
    make_clip(tmp_path / "cam.mp4", seconds=4.0, fps=10, audio=False)
    y4m = write_y4m(clip_frames(tmp_path / "cam.mp4"), tmp_path / "cam.y4m", fps=10)
    wav = write_wav(speak("Hello there. I am so happy to see you today!", tmp_path / "raw.wav"),
                    16000, tmp_path / "speech.wav")
    shot = tmp_path / "live.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={y4m}", f"--use-file-for-fake-audio-capture={wav}",
            "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            open_study_form(page, url, "P50", "S50")
            # study mode: raw media are refused until the participant's consent is ticked
            page.get_by_label(re.compile("also store raw frames")).check()
            # click, not check(): the page unticks the box again as soon as it refuses, and
            # check() would fail if that reply came before its own look at the box
            page.get_by_label(re.compile("log this session")).click()
            page.get_by_text("needs the participant's consent").first.wait_for(timeout=PAGE_STEP_MS)
            page.wait_for_function("() => !document.querySelector('#log_on input:checked')",
                                   timeout=PAGE_STEP_MS)  # refused: the box is unticked again
            page.get_by_label(re.compile("consents to storing recordings")).check()
            page.get_by_label(re.compile("own emotion now")).click()
            page.get_by_role("option", name="sad", exact=True).click()
            page.get_by_label(re.compile("log this session")).check()
            wait_for_banner(page, "raw frames + audio ARE stored", tmp)
            page.get_by_text("Click to Access Webcam").click(timeout=PAGE_STEP_MS)
            # one at a time: a click while the other stream is still starting can be lost
            for elem in ("#webcam", "#mic"):
                page.locator(f"{elem} button", has_text="Record").click(timeout=PAGE_STEP_MS)
                page.locator(f"{elem} button", has_text="Stop").first.wait_for(timeout=PAGE_STEP_MS)
                page.wait_for_timeout(500)
            deadline = time.monotonic() + BROWSER_TIMEOUT_S
            seen, first, plot0 = {}, {}, None
            t0 = time.monotonic()
            while time.monotonic() < deadline:
                stats = page.locator("#stats").inner_text()
                seen = {
                    "face": re.search(r"faces in view\s+#\d+", stats) is not None,
                    "image": page.locator("#faces img").count() > 0,
                    "window": "window " in page.locator("#label").inner_text(),
                    "explanation": bool(page.locator("#explanation textarea").input_value().strip()),
                    # the plot is re-rendered once windows are analysed (it starts empty)
                    "timeline": plot0 is not None and page.locator("#timeline img").count() > 0
                                and page.locator("#timeline img").get_attribute("src") != plot0,
                    "audio": re.search(r"audio in\s+[1-9][\d.]* s at", stats) is not None,
                }
                first.update({k: round(time.monotonic() - t0, 1) for k, v in seen.items()
                              if v and k not in first})
                if all(seen.values()):
                    break
                if plot0 is None and page.locator("#timeline img").count():
                    plot0 = page.locator("#timeline img").get_attribute("src")  # before any window
                time.sleep(0.5)
            page.wait_for_timeout(1000)  # one more refresh so the screenshot is current
            page.screenshot(path=str(shot), full_page=True)
            assert all(seen.values()), f"missing after {BROWSER_TIMEOUT_S} s: {seen}; stats: {stats!r}"
            assert _green_pixels(page.locator("#faces img").screenshot()) > 200, "no face box drawn"
            assert "48000 Hz" in page.locator("#stats").inner_text()  # the browser's mic rate
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}; first seen after (s): {first}")
    # consent and the participant's self-report are on the logged windows, with their media
    logged = [r for r in read_jsonl(tmp / "sessions" / "S50.jsonl", allow_partial_tail=True)
              if r.get("source") == "live"]
    assert logged and all(r["consent"] is True and r["consent_at"] for r in logged)
    assert logged[-1]["self_report"] == "sad" and logged[-1]["self_report_at"]
    assert list((tmp / "sessions" / "S50_media").glob("window_*.npz"))
    # the closed tab's engine is stopped at once (Gradio would keep its State an hour)
    wait_for_line(tmp / "runs" / "app.log", "tab closed: its live session stopped", BROWSER_TIMEOUT_S)


def test_study_log_belongs_to_the_tab_that_opened_it(server):
    """Two browser sessions name the same study session id: the second is refused and
    cannot export the first one's CSV."""
    from playwright.sync_api import sync_playwright

    url, tmp = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            mine, theirs = browser.new_page(), browser.new_page()  # one context (session) each
            for page, who in ((mine, "P40"), (theirs, "P41")):
                open_study_form(page, url, who, "S40")
                page.get_by_label(re.compile("log this session")).click()
                if page is mine:
                    wait_for_banner(page, "Study logging is ON", tmp)
            theirs.get_by_text("in use by another browser session").first.wait_for(timeout=PAGE_STEP_MS)
            theirs.wait_for_function("() => !document.querySelector('input[type=checkbox]:checked')",
                                     timeout=PAGE_STEP_MS)  # their box is unticked again
            theirs.get_by_role("button", name="Export session CSV").click()
            theirs.get_by_text("Study logging is off").first.wait_for(timeout=PAGE_STEP_MS)
            mine.get_by_role("button", name="Export session CSV").click()
            mine.locator("#csv_file a[href*='S40.csv']").first.wait_for(state="attached", timeout=PAGE_STEP_MS)
            assert "Study logging is ON" not in theirs.locator("#banner").inner_text()
        finally:
            browser.close()
    assert (tmp / "sessions" / "S40.jsonl").exists()
