"""Nothing of a participant outside the study folder: the real app (a subprocess, its
system temp dir a folder of the test's) driven by a real browser (fake camera +
microphone) and by ``gradio_client`` (a good upload and a refused one), with study
logging off. Afterwards no picture, audio or video file is in Gradio's temp folder or
the system temp dir, and Gradio's per-process folder is gone once the app exits. And
consent is the study's: unticked on the page, it governs the app's own --log-session
log (media deleted, audited)."""
from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path

import pytest

from live.page.hosting import STREAM_LEFTOVER_AGE_S, SWEEP_EVERY_S

from tests.media import clip_frames, make_clip, speak, write_wav, write_y4m
from tests.test_app_server import (APP_ARGS, BROWSER_TIMEOUT_S, CHROMIUM, PAGE_STEP_MS, START_TIMEOUT_S, start_app, stop,
                                   wait_for_line)

MEDIA_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".wav", ".webm", ".mp3", ".ogg",
                  ".m4a", ".flac", ".mp4", ".mov", ".mkv", ".avi", ".npz", ".y4m"}
PICTURES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}
MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"RIFF", b"\x1a\x45\xdf\xa3", b"OggS", b"ID3", b"GIF8", b"PK\x03\x04")


def media_files(folder: Path) -> list[Path]:
    """Files under ``folder`` that hold a picture, audio or video (by name or first bytes)."""
    found = []
    for p in folder.rglob("*"):
        if not p.is_file():
            continue
        head = p.open("rb").read(12)
        if p.suffix.lower() in MEDIA_SUFFIXES or head.startswith(MAGIC) or head[4:8] == b"ftyp":
            found.append(p)
    return found


def is_picture(p: Path) -> bool:
    head = p.open("rb").read(12)
    return (p.suffix.lower() in PICTURES or head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8"))
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"))


def browser_session(url: str, tmp: Path) -> dict:
    """Camera + microphone on, until a window result shows; then Stop. Returns what the
    page showed after Stop: {"speech", "frames_before", "frames_after"}."""
    from playwright.sync_api import sync_playwright

    make_clip(tmp / "cam.mp4", seconds=4.0, fps=10, audio=False)
    y4m = write_y4m(clip_frames(tmp / "cam.mp4"), tmp / "cam.y4m", fps=10)
    wav = write_wav(speak("Hello there, how are you today?", tmp / "raw.wav"), 16000, tmp / "speech.wav")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={y4m}", f"--use-file-for-fake-audio-capture={wav}",
            "--disable-gpu", "--disable-background-networking", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.goto(url, wait_until="load")
            page.locator("#stats", has_text="frames/s in").wait_for(timeout=PAGE_STEP_MS)
            page.get_by_text("Click to Access Webcam").click(timeout=PAGE_STEP_MS)
            for elem in ("#webcam", "#mic"):
                page.locator(f"{elem} button", has_text="Record").click(timeout=PAGE_STEP_MS)
                page.locator(f"{elem} button", has_text="Stop").first.wait_for(timeout=PAGE_STEP_MS)
                page.wait_for_timeout(500)
            deadline = time.monotonic() + BROWSER_TIMEOUT_S
            while time.monotonic() < deadline:
                stats = page.locator("#stats").inner_text()
                if ("window " in page.locator("#label").inner_text() and page.locator("#faces img").count()
                        and re.search(r"audio in\s+[1-9][\d.]* s at", stats)):
                    break
                time.sleep(0.5)
            else:
                raise AssertionError(f"no window result / preview / audio within {BROWSER_TIMEOUT_S} s: {stats!r}")
            page.locator("#stop").click()
            page.locator("#speech", has_text="stopped").wait_for(timeout=PAGE_STEP_MS)
            frames = lambda: re.search(r"frames in / dropped at start\s+(\d+)",  # noqa: E731
                                       page.locator("#stats").inner_text()).group(1)
            # what was in flight at Stop arrives (slowly on a loaded machine): the count
            # settles, or the test fails here; then it must stay while the browser streams
            before, deadline = frames(), time.monotonic() + PAGE_STEP_MS / 1000
            while time.monotonic() < deadline:
                page.wait_for_timeout(1500)
                now = frames()
                if now == before:
                    break
                before = now
            else:
                raise AssertionError(f"the frame count still grows {PAGE_STEP_MS} ms after Stop: {before}")
            page.wait_for_timeout(3000)  # the browser goes on streaming: nothing is counted
            return {"speech": page.locator("#speech").inner_text(), "frames_before": before,
                    "frames_after": frames(), "stats": page.locator("#stats").inner_text()}
        finally:
            browser.close()


def test_nothing_of_the_participant_left_in_temp_folders_with_logging_off(tmp_path):
    from gradio_client import Client, handle_file

    systmp = tmp_path / "systmp"
    systmp.mkdir()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TMPDIR=str(systmp))
    env.pop("GRADIO_TEMP_DIR", None)
    log = tmp_path / "app.log"
    proc, url = start_app(APP_ARGS + ["--log-dir", str(tmp_path / "sessions"), "--max-upload-mb", "1"], log,
                          tmp_path, env=env)
    try:
        wait_for_line(log, "model: tiny", START_TIMEOUT_S)
        (gtemp,) = systmp.glob("omni-emotion-gradio-*")  # the app's own folder for Gradio's files
        assert stat.S_IMODE(gtemp.stat().st_mode) == 0o700
        shown = browser_session(url, tmp_path)
        # no frame was ever written: the preview is inline and webcam frames arrive inline
        # (only microphone chunks are files, read and deleted, or swept below)
        assert [p for p in media_files(systmp) if is_picture(p)] == []
        assert "stopped" in shown["speech"] and re.search(r"live session\s+stopped", shown["stats"])
        assert shown["frames_before"] == shown["frames_after"], shown  # counters stop with Stop
        # an upload analysed, and one refused (a picture renamed .mp4): both deleted
        make_clip(tmp_path / "clip.mp4", seconds=3.0, fps=10)
        client = Client(url, verbose=False)
        status = client.predict(handle_file(str(tmp_path / "clip.mp4")), 2.0, 1.0, "always",
                                api_name="/analyse_file")[0]
        assert "clip.mp4" in status and "analysed" in status
        from PIL import Image

        Image.new("RGB", (64, 64)).save(tmp_path / "photo.png")
        (tmp_path / "photo.png").rename(tmp_path / "photo.mp4")
        with pytest.raises(Exception, match="photo.mp4 is a picture") as err:
            client.predict(handle_file(str(tmp_path / "photo.mp4")), 2.0, 1.0, "always",
                           api_name="/analyse_file")
        assert "omni-emotion-gradio" not in str(err.value)  # the file's name, not the server's path
        (tmp_path / "big.mp4").write_bytes(os.urandom(2 * 2**20))  # over --max-upload-mb 1
        with pytest.raises(Exception, match="(?i)size"):
            client.predict(handle_file(str(tmp_path / "big.mp4")), 2.0, 1.0, "always", api_name="/analyse_file")
        # chunks Gradio's stream queue dropped unread are swept within seconds (SWEEP_*)
        deadline = time.monotonic() + STREAM_LEFTOVER_AGE_S + 4 * SWEEP_EVERY_S
        while media_files(systmp) and time.monotonic() < deadline:
            time.sleep(1)
        assert media_files(systmp) == [], "a picture/audio/video was left in a temp folder"
    finally:
        stop(proc)
    assert not gtemp.exists(), "Gradio's folder outlived the app"
    assert media_files(systmp) == []
    text = log.read_text()
    assert "share=True" not in text and "* Running on local URL:  http://127.0.0.1:" in text
    assert not list((tmp_path / "sessions").glob("*.jsonl"))  # logging was off: no study log


def test_unticking_consent_on_the_page_withdraws_from_the_apps_own_log(tmp_path):
    """``app.py --log-session S --participant P --keep-media --consent``: the page's
    consent box governs that log too. Unticked, the windows say consent: false, no more
    media are stored, the stored ones are deleted, and an audit line says so."""
    from playwright.sync_api import sync_playwright

    from live.study_log import AUDIT_NAME, read_jsonl

    study = tmp_path / "sessions"
    log = tmp_path / "app.log"
    proc, url = start_app(APP_ARGS + ["--log-dir", str(study), "--log-session", "S1", "--participant", "P1",
                                      "--keep-media", "--consent"], log, tmp_path)
    make_clip(tmp_path / "cam.mp4", seconds=4.0, fps=10, audio=False)
    y4m = write_y4m(clip_frames(tmp_path / "cam.mp4"), tmp_path / "cam.y4m", fps=10)
    wav = write_wav(speak("Hello there, how are you today?", tmp_path / "raw.wav"), 16000, tmp_path / "speech.wav")
    try:
        wait_for_line(log, "model: tiny", START_TIMEOUT_S)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-video-capture={y4m}", f"--use-file-for-fake-audio-capture={wav}",
                "--disable-gpu", "--disable-background-networking", "--no-first-run"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1300})
                page.goto(url, wait_until="load")
                page.locator("#stats", has_text="frames/s in").wait_for(timeout=PAGE_STEP_MS)
                page.get_by_text("Click to Access Webcam").click(timeout=PAGE_STEP_MS)
                page.locator("#webcam button", has_text="Record").click(timeout=PAGE_STEP_MS)
                deadline = time.monotonic() + BROWSER_TIMEOUT_S
                while not list((study / "S1_media").glob("*.npz")):
                    assert time.monotonic() < deadline, "no media stored with consent"
                    time.sleep(0.5)
                assert page.get_by_label(re.compile("consents to storing recordings")).is_checked()
                page.get_by_label(re.compile("consents to storing recordings")).uncheck()
                page.get_by_text("Consent withdrawn").first.wait_for(timeout=PAGE_STEP_MS)
                n = len(read_jsonl(study / "S1.jsonl"))
                deadline = time.monotonic() + BROWSER_TIMEOUT_S
                while len(read_jsonl(study / "S1.jsonl")) < n + 2:  # windows after the withdrawal
                    assert time.monotonic() < deadline, "no window logged after the withdrawal"
                    time.sleep(0.5)
            finally:
                browser.close()
    finally:
        stop(proc)
    lines = read_jsonl(study / "S1.jsonl")
    assert lines[0]["consent"] is True and lines[-1]["consent"] is False and lines[-1]["media"] is None
    assert not list(study.rglob("*.npz")), "media stored before the withdrawal were not deleted"
    (audit,) = read_jsonl(study / AUDIT_NAME)
    assert audit["participant"] == "P1" and audit["media_deleted"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in study.glob("*.jsonl"))
    assert stat.S_IMODE(study.stat().st_mode) == 0o700
