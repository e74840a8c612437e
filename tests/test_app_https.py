"""The page for participants who are not at the lab machine: app.py over HTTPS (a
self-signed certificate made here with ``cryptography``) in a real Chromium with a fake
camera and microphone. The participant's page (?view=participant) is a secure context,
streams camera and microphone, shows the recording indicator and no labels; the
researcher's page on the same server sees that session in its overview and marks an
event into it with Alt+M."""
from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import sys
import time
import urllib.request
from pathlib import Path


from tests.media import clip_frames, make_clip, speak, write_wav, write_y4m
from tests.test_app_server import APP_ARGS, CHROMIUM, PAGE_STEP_MS, START_TIMEOUT_S, free_port, stop, wait_for_line

ROOT = Path(__file__).resolve().parents[1]
BROWSER_TIMEOUT_S = 90


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 / localhost and its key, PEM files (a lab's own)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "omni-emotion lab test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def serve_https(args, tmp: Path):
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1",
               PYTHONPATH=str(ROOT))
    log = open(tmp / "app.log", "w")
    proc = subprocess_popen([sys.executable, str(ROOT / "app.py"), *args, "--port", str(port)], tmp, env, log)
    url = f"https://127.0.0.1:{port}/"
    insecure = ssl.create_default_context()
    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE  # our own self-signed one
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"app.py exited with {proc.returncode}:\n{(tmp / 'app.log').read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=insecure) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.3)
    stop(proc)
    raise AssertionError(f"no https page within {START_TIMEOUT_S} s:\n{(tmp / 'app.log').read_text()}")


def subprocess_popen(cmd, cwd, env, log):
    import subprocess

    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_participant_page_over_https_streams_and_shows_no_labels(tmp_path):
    from playwright.sync_api import sync_playwright

    cert, key = self_signed(tmp_path)
    proc, url = serve_https([*APP_ARGS, "--log-dir", str(tmp_path / "sessions"), "--ssl-certfile", cert,
                             "--ssl-keyfile", key], tmp_path)
    try:
        wait_for_line(tmp_path / "app.log", "model: tiny", START_TIMEOUT_S)
        make_clip(tmp_path / "cam.mp4", seconds=4.0, fps=10, audio=False)
        y4m = write_y4m(clip_frames(tmp_path / "cam.mp4"), tmp_path / "cam.y4m", fps=10)
        wav = write_wav(speak("Hello there, how are you today?", tmp_path / "raw.wav"), 16000,
                        tmp_path / "speech.wav")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--ignore-certificate-errors", "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={y4m}",
                f"--use-file-for-fake-audio-capture={wav}", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update"])
            try:
                run_pages(browser, url, tmp_path)
            finally:
                browser.close()
    finally:
        stop(proc)


def run_pages(browser, url: str, tmp: Path) -> None:
    part = browser.new_page(viewport={"width": 1200, "height": 1000})
    part.goto(url + "?view=participant", wait_until="load")
    part.locator("#recording", has_text="Not recording").wait_for(timeout=PAGE_STEP_MS)
    assert part.evaluate("() => window.isSecureContext && location.protocol") == "https:"
    # no labels, explanation, timeline or mark box on a participant's page
    for elem in ("#label", "#explanation", "#timeline", "#mark_btn", "#overview", "#video", "#table"):
        assert not part.locator(elem).is_visible(), elem
    part.get_by_role("tab", name="File").click()  # its header stays; nothing under it
    part.wait_for_timeout(500)
    assert not part.locator("#video").is_visible() and not part.locator("#file_timeline").is_visible()
    part.get_by_role("tab", name="Live").click()
    part.get_by_text("Click to Access Webcam").click(timeout=PAGE_STEP_MS)
    for elem in ("#webcam", "#mic"):
        part.locator(f"{elem} button", has_text="Record").click(timeout=PAGE_STEP_MS)
        part.locator(f"{elem} button", has_text="Stop").first.wait_for(timeout=PAGE_STEP_MS)
        part.wait_for_timeout(500)
    try:
        part.locator("#recording", has_text="✅ microphone").wait_for(timeout=BROWSER_TIMEOUT_S * 1000)
        part.locator("#recording", has_text="✅ camera").wait_for(timeout=PAGE_STEP_MS)
    except Exception:
        raise AssertionError(f"indicator: {part.locator('#recording').inner_text()!r}; app log:\n"
                             f"{(tmp / 'app.log').read_text()[-3000:]}") from None
    assert "RECORDING" in part.locator("#recording").inner_text()
    # the researcher's page beside it: sees the participant's session, marks an event into it
    res = browser.new_page(viewport={"width": 1400, "height": 1200})
    res.goto(url, wait_until="load")
    res.locator("#stats", has_text="frames/s in").wait_for(timeout=PAGE_STEP_MS)
    res.get_by_text("All sessions, live").click()
    res.locator("#overview", has_text="participant").wait_for(timeout=PAGE_STEP_MS)
    res.locator("#mark_event input, #mark_event textarea").first.fill("stim_A")
    res.keyboard.press("Alt+KeyM")
    res.locator("#mark_status", has_text="marked stim_A").wait_for(timeout=PAGE_STEP_MS)
    res.locator("#overview", has_text="stim_A").wait_for(timeout=PAGE_STEP_MS)
    assert not part.locator("#label").is_visible()  # still nothing of the analysis for the participant
    res.screenshot(path=str(tmp / "researcher.png"), full_page=True)
    part.screenshot(path=str(tmp / "participant.png"), full_page=True)
