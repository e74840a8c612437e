"""What one browser tab's page shows (``PageView``), its stats and warnings: written by
the engine's threads (``live.page.runner``), read by the page's timer
(``live.page.live_tab.refresh``).
"""
from __future__ import annotations

import collections
import time

import numpy as np

from model.net.answers import ParsedAnswer

FPS_SPAN_S = 2.0  # s of frame arrivals that "frames/s in" averages over
NO_MEDIA_WARN_S = 5.0  # s after start without frames / audio before the page warns


class PageView:
    """One tab's view state. ``records``: window records (``WindowEvent.to_json`` + run,
    source, plan, self-report); ``latest``: newest record with a result (analysed,
    pending or failed); ``partial``: (text so far, its parse) of the answer streaming in
    for window ``in_flight`` (run, index); ``frame``/``faces``: newest frame and its
    tracked faces."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        self.latest: dict | None = None
        self.partial: tuple[str, ParsedAnswer | None] = ("", None)  # answer streaming in, its parse
        self.in_flight = None  # (run, window index) of the answer streaming in
        self.frame, self.faces, self.frame_no = None, [], 0
        self.arrivals: collections.deque = collections.deque(maxlen=256)  # wall times of frames
        self.frames_in = self.frames_dropped = 0
        self.audio_s, self.audio_rate = 0.0, None
        self.sent: dict = {}  # what the page shows already (its refresh skips unchanged outputs)
        self.participant_view = False  # the tab is a participant's: the page sends it no labels

    # -- written by the engine's threads ------------------------------------------
    def frame_arrived(self, dropped: bool) -> None:
        """A webcam frame came in; ``dropped``: the engine was still starting."""
        self.frames_in += 1
        self.arrivals.append(time.monotonic())
        self.frames_dropped += dropped

    def audio_arrived(self, seconds: float, rate: int) -> None:
        self.audio_rate = rate
        self.audio_s += seconds

    def frame_seen(self, frame, faces) -> None:
        """The engine's ``on_frame``: the newest frame and its tracked faces."""
        self.frame, self.faces = frame, list(faces)
        self.frame_no += 1

    def stream_begins(self, run: int, index: int) -> None:
        self.partial, self.in_flight = ("", None), (run, index)  # partial first: refresh reads in_flight first

    def streamed(self, text: str, parsed: ParsedAnswer) -> None:
        """The answer so far of the window in flight and its parse (the served model's)."""
        self.partial = (text, parsed)

    def add(self, rec: dict, has_result: bool) -> None:
        self.records.append(rec)
        if has_result:
            self.latest = rec

    def clear(self) -> None:
        """A closed tab holds no frames or records."""
        self.records, self.latest, self.frame, self.faces = [], None, None, []

    # -- read by the page -----------------------------------------------------------
    def stats(self, runner) -> dict:
        """The stats table of ``runner`` (a ``live.page.runner.EngineRunner``)."""
        now = time.monotonic()
        recent = [t for t in self.arrivals if now - t <= FPS_SPAN_S]
        done = [r["latency_s"] for r in self.records if r["latency_s"] is not None]
        n = collections.Counter("analysed" if r["analysed"] else r["reason"] for r in self.records)
        try:
            import psutil

            rss = psutil.Process().memory_info().rss / 2**20
        except Exception:
            rss = float("nan")
        holder = runner.holder
        state = "running" if runner.running else "stopped" if runner.paused else "waiting for camera / microphone"
        return {
            "live session": state,
            "frames/s in": round(len(recent) / FPS_SPAN_S, 1) if runner.running else 0.0,
            "frames in / dropped at start": f"{self.frames_in} / {self.frames_dropped}",
            "audio in": f"{self.audio_s:.1f} s at {self.audio_rate or '–'} Hz",
            "windows analysed / gated / dropped / errors":
                f"{n['analysed']} / {n['gated']} / {n['dropped']} / {n['error']}",
            "window latency last / mean (s)": f"{done[-1]:.2f} / {np.mean(done):.2f}" if done else "–",
            "faces in view": ", ".join(f"#{f.track}" for f in self.faces) or "none",
            "model": holder.name,
            "plan": holder.plan or "none",
            "memory (process RSS / model weights)": f"{rss:.0f} MB / {holder.weights_mb:.0f} MB",
        }

    def warnings(self, runner, log_error: str = "") -> list[str]:
        """The engine's and the study log's errors, and missing media once ``runner`` ran a while."""
        out = [e for e in (runner.error, log_error) if e]
        if runner.running and time.monotonic() - runner.started_at > NO_MEDIA_WARN_S:
            if not self.frames_in:
                out.append("No camera frames arrive: allow camera access for this page "
                           "(browser site settings), then press Record on the webcam.")
            if not self.audio_s:
                out.append("No microphone audio arrives: allow microphone access and press "
                           "Record on the microphone (analysis goes on with video only).")
        return out
