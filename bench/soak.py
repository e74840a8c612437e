"""Soak test of the app's memory and study-log completeness (issue 10). Prints one JSON
object.

    .venv/bin/python bench/soak.py [--rounds 6] [--live-s 60] [--clip-s 6] [--out FILE]
    .venv/bin/python bench/soak.py --server [--rounds 6] [--clip-s 6] [--out FILE]

In process (default), each round does what a page does, in process, with the tiny model: one live session
(``live.page.session.PageSession``, fed a clip's frames and 48 kHz audio in real time, as
the browser streams them, with the page's refresh drawing faces and the timeline, a
study log on, then closed) and one file analysis (``analyse_video`` + ``file_outputs``,
as the File tab and the ``/analyse_file`` API do, logged). After each round: ``gc``,
then the process RSS. Then one long live session (``--live-s``, the clip looped) with
RSS sampled every ``SAMPLE_S``, and its log checked against what the session recorded.

``--server``: the real thing. ``app.py`` (tiny model, ``--log-session``) in a
subprocess; each round opens the page in a real browser (Debian's chromium through
Playwright, the clip as fake camera + microphone), streams for ``--clip-s`` s, closes
the tab, then analyses the clip through the ``/analyse_file`` API (``gradio_client``);
RSS is the app process's. The log is checked: every line JSON, every API window in it.

Result: ``rss_mb`` per round, ``growth_after_first`` = (last - first) / first (the goal
is ≤ 0.10), ``long_live`` {rss_mb samples, windows, logged, complete}.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402  (after the path: run as a script)

BROWSER_RATE = 48_000  # Hz, what a browser's microphone stream delivers
FPS = 10  # frames/s pushed (a browser streams ~5)
REFRESH_EVERY = 5  # pushed frames between page refreshes (0.5 s, as the page's timer)
SAMPLE_S = 10.0  # s between RSS samples in the long live session
WINDOW_S, HOP_S = 2.0, 1.0  # s


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared with "
            f"other work), Python {platform.python_version()}")


def rss_mb() -> float:
    import psutil

    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def decode(path: Path):
    """(frames (n, H, W, 3) uint8, audio (m,) int16 at 48 kHz) of a clip."""
    import av
    import numpy as np

    from live.contract.media import AUDIO_RATE
    from live.resample import Resampler
    from live.sources import decode_audio

    with av.open(str(path)) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    audio16 = decode_audio(path)
    audio48 = Resampler(BROWSER_RATE).from_array(audio16, AUDIO_RATE)
    return frames, (np.clip(audio48, -1, 1) * 32767).astype(np.int16)


def live_session(holder, frames, audio48, root: Path, name: str, seconds: float,
                 on_sample=None) -> dict:
    """A page session fed ``seconds`` of the clip (looped) in real time; closed; its
    study log compared with its records."""
    from live.page.live_tab import refresh
    from live.page.session import PageSession
    from live.study_log import LogOwners, read_jsonl

    s = PageSession(holder, WINDOW_S, HOP_S, log_root=root, owners=LogOwners())
    s.study.set_logging(True, "soak", name, owner="soak")
    step = BROWSER_RATE // FPS
    n = int(seconds * FPS)
    t0 = next_sample = time.monotonic()
    for i in range(n):
        k = i % len(frames)
        s.runner.push_frame(frames[k])
        s.runner.push_audio((BROWSER_RATE, audio48[k * step:(k + 1) * step]))
        if i == 0 and not s.runner.source.ready.wait(60):
            raise RuntimeError("the live engine did not start")
        if i % REFRESH_EVERY == 0:
            refresh(s)
        if on_sample is not None and time.monotonic() >= next_sample:
            on_sample(round(time.monotonic() - t0, 1))
            next_sample += SAMPLE_S
        time.sleep(max(0.0, t0 + (i + 1) / FPS - time.monotonic()))
    s.runner.stop()
    records = list(s.view.records)
    s.close()
    logged = read_jsonl(root / f"{name}.jsonl")
    same = [(r["run"], r["index"], r["reason"]) for r in logged] == \
           [(r["run"], r["index"], r["reason"]) for r in records]
    return {"windows": len(records), "analysed": sum(r["analysed"] for r in records),
            "logged": len(logged), "complete": same and len(records) > 0}


def file_analysis(holder, path: Path, root: Path, name: str) -> dict:
    from live.page.file_analysis import analyse_video, file_outputs
    from live.study_log import StudyLog, read_jsonl

    with StudyLog(root, name, "soak") as log:
        records = analyse_video(path, holder, WINDOW_S, HOP_S, study=log)
    file_outputs(records, path.name, root / "exports")  # the File tab's table, figure and exports
    logged = read_jsonl(root / f"{name}.jsonl")
    return {"windows": len(records), "logged": len(logged), "complete": len(logged) == len(records)}


CHROMIUM = "/usr/bin/chromium"
START_TIMEOUT_S = 120  # s for the app to serve the page and load the tiny model


def start_server(tmp: Path):
    """app.py --model tiny on a free port, logging to one study session; (process, url)."""
    import socket
    import subprocess
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    out = open(tmp / "app.out", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", "tiny", "--port", str(port),
                             "--window", str(WINDOW_S), "--hop", str(HOP_S), "--max-new-tokens", "8",
                             "--log-dir", str(tmp / "sessions"), "--log-session", "soak",
                             "--participant", "soak", "--log-file", str(tmp / "app.log")],
                            cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is None and "model: tiny" in (tmp / "app.out").read_text():
            try:
                urllib.request.urlopen(url, timeout=2).close()
                return proc, url
            except OSError:
                pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"app did not start:\n{(tmp / 'app.out').read_text()}")


def wait_for(cond, timeout_s: float = 30.0) -> bool:
    """True once ``cond()``; False after ``timeout_s`` (an app without the unload hook)."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def browser_tab(browser, url: str, seconds: float) -> None:
    """Open the page, stream the fake camera + microphone for ``seconds``, close the tab."""
    page = browser.new_page(viewport={"width": 1400, "height": 1300})
    page.goto(url, wait_until="load")
    page.get_by_text("Click to Access Webcam").click(timeout=30_000)
    for elem in ("#webcam", "#mic"):
        page.locator(f"{elem} button", has_text="Record").click(timeout=15_000)
        page.locator(f"{elem} button", has_text="Stop").first.wait_for(timeout=15_000)
    page.wait_for_timeout(seconds * 1000)
    page.close()


def server_soak(args, tmp: Path, clip: Path, frames) -> dict:
    import psutil
    from gradio_client import Client, handle_file
    from playwright.sync_api import sync_playwright

    from live.contract.media import AUDIO_RATE
    from live.study_log import read_jsonl
    from live.testclip import write_wav, write_y4m
    from live.sources import decode_audio

    y4m = write_y4m(frames, tmp / "cam.y4m", fps=FPS)
    wav = write_wav(decode_audio(clip), AUDIO_RATE, tmp / "mic.wav")
    proc, url = start_server(tmp)
    app_rss = lambda: round(psutil.Process(proc.pid).memory_info().rss / 2**20, 1)  # noqa: E731
    rounds, api_windows = [], 0
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-video-capture={y4m}", f"--use-file-for-fake-audio-capture={wav}",
                "--disable-gpu", "--no-first-run"])
            client = Client(url, verbose=False)
            for r in range(args.rounds):
                if "live" in args.parts:
                    browser_tab(browser, url, args.clip_s)
                if "file" in args.parts:
                    _s, _t, _p, jsonl, _c = client.predict(handle_file(str(clip)), WINDOW_S, HOP_S,
                                                           "always", api_name="/analyse_file")
                    api_windows += len(Path(jsonl).read_text().splitlines())
                closed = None
                if "live" in args.parts:  # the closed tab's unload handler runs in the background
                    closed = wait_for(lambda: (tmp / "app.log").read_text().count("tab closed") > r)
                rounds.append({"round": r, "rss_mb": app_rss(), "tab_closed_by_app": closed})
                print(json.dumps(rounds[-1]), file=sys.stderr, flush=True)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)
    logged = read_jsonl(tmp / "sessions" / "soak.jsonl")  # raises on a bad line
    from_api = sum(str(x.get("source", "")).endswith("clip.mp4") for x in logged)
    return {"rounds": rounds, "rss_mb": [x["rss_mb"] for x in rounds],
            "log_lines": len(logged), "live_lines": sum(x.get("source") == "live" for x in logged),
            "api_windows": api_windows, "api_windows_logged": from_api,
            "log_complete": from_api == api_windows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=6, help="live sessions + file analyses")
    p.add_argument("--live-s", type=float, default=60.0, help="s of the long live session (0: none)")
    p.add_argument("--clip-s", type=float, default=6.0, help="s of the clip (one live session)")
    p.add_argument("--server", action="store_true", help="the real app + a real browser")
    p.add_argument("--parts", default="live,file", help="--server: what a round does (live, file)")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)

    from live.testclip import make_clip
    from model.serve.serving import ModelHolder

    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    print(f"working in {tmp}", file=sys.stderr)
    clip = tmp / "clip.mp4"
    make_clip(clip, seconds=args.clip_s, fps=FPS)
    frames, audio48 = decode(clip)
    if args.server:
        out = server_soak(args, tmp, clip, frames)
        rss = out["rss_mb"]
        out["growth_after_first"] = round((rss[-1] - rss[0]) / rss[0], 4) if rss else None
        out["machine"] = machine()
        emit(out, args.out)
        return 0
    holder = ModelHolder("tiny", max_new_tokens=8)
    holder.start().join()
    if holder.state != "ready":
        print(f"error: {holder.message}", file=sys.stderr)
        return 1
    rounds = []
    t_start = time.monotonic()
    for r in range(args.rounds):
        live = live_session(holder, frames, audio48, tmp / "sessions", f"live{r}", args.clip_s)
        file = file_analysis(holder, clip, tmp / "sessions", f"file{r}")
        rounds.append({"round": r, "rss_mb": round(rss_mb(), 1), "live": live, "file": file})
        print(json.dumps(rounds[-1]), file=sys.stderr, flush=True)
    rss = [x["rss_mb"] for x in rounds]
    out = {
        "machine": machine(),
        "rounds": rounds, "rss_mb": rss,
        "growth_after_first": round((rss[-1] - rss[0]) / rss[0], 4) if rss else None,
        "all_logs_complete": all(x["live"]["complete"] and x["file"]["complete"] for x in rounds),
    }
    if args.live_s > 0:
        samples = []
        long = live_session(holder, frames, audio48, tmp / "sessions", "long", args.live_s,
                            on_sample=lambda t: samples.append((t, round(rss_mb(), 1))))
        long["rss_mb"] = samples + [(args.live_s, round(rss_mb(), 1))]
        long["seconds"] = args.live_s
        out["long_live"] = long
    out["wall_s"] = round(time.monotonic() - t_start, 1)
    emit(out, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
