"""One browser tab's engine runs (``EngineRunner``): start / stop / restart / close, the
browser's frames and audio pushed in, each window handed to the served model; one run
per Start (``live.study_log.new_run_id``). Newest frame, counters and the streamed answer
go to the tab's ``live.page.view.PageView``, each window to ``on_window(event, run)``.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Callable

import numpy as np

from live.contract.media import HOP_S, WINDOW_S
from live.contract.result import Result
from live.engine import Engine, EngineConfig, WindowEvent
from live.markers import MarkerTimeline
from live.page.view import PageView
from live.sources import PushSource
from live.study_log import new_run_id
from live.window import Window


class EngineRunner:
    """A push source + engine for one tab; starts on the first frame/chunk unless stopped."""

    def __init__(self, holder, lock: threading.RLock, view: PageView,
                 on_window: Callable[[WindowEvent, int], None],
                 markers_for: Callable[[int], MarkerTimeline],
                 window_s: float = WINDOW_S, hop_s: float = HOP_S, gate: str = "always") -> None:
        self.holder, self.lock, self.view = holder, lock, view  # holder: a live.page.session.ModelServer
        self.on_window, self.markers_for = on_window, markers_for
        self.window_s, self.hop_s, self.gate = window_s, hop_s, gate
        self.engine: Engine | None = None
        self.source: PushSource | None = None
        self.thread: threading.Thread | None = None  # the newest run's engine thread
        self.run_no = 0  # the newest run's id (``new_run_id``: unique across processes)
        self.open_run = 0  # the run whose records are still taken (0: none, after stop)
        self.paused = False  # Stop pressed: streams no longer auto-start the engine
        self.closed = False  # close() called (the tab is gone): nothing starts again
        self.started_at = 0.0
        self.error = ""
        self.run_clock = None  # the newest run's stream clock (kept after stop for its last windows)

    @property
    def running(self) -> bool:
        return self.engine is not None

    def clock(self):
        """The running engine's stream clock, None while nothing runs."""
        with self.lock:
            eng = self.engine
        return None if eng is None else eng.clock

    def start(self) -> None:
        with self.lock:
            if self.engine is not None or self.closed:
                return
            self.paused, self.error = False, ""
            self.run_no = new_run_id()  # (run, index) names one window in any study log
            run = self.open_run = self.run_no
            self.source = PushSource(name="browser")
            cfg = EngineConfig(hop_s=float(self.hop_s), window_s=float(self.window_s), gate=self.gate)
            eng = Engine(self.source, lambda w: self._analyse(w, run), cfg, markers=self.markers_for(run),
                         on_frame=self.view.frame_seen, on_window=lambda ev: self.on_window(ev, run))
            self.engine, self.run_clock = eng, eng.clock
            self.started_at = time.monotonic()
            self.thread = threading.Thread(target=self._run, args=(eng,), name=f"live-{run}", daemon=True)
            self.thread.start()

    def _run(self, engine: Engine) -> None:
        try:
            engine.run()
        except Exception as e:  # e.g. the face detector's models cannot be loaded
            self.error = f"live engine stopped: {type(e).__name__}: {e}"
            print(f"error: {self.error}", file=sys.stderr, flush=True)
        finally:
            with self.lock:
                if self.engine is engine:
                    self.engine = self.source = None

    def stop(self, pause: bool = True) -> None:
        """Stop the engine and return once it, its analyser worker and the last
        window's record (page + study log) are finished: no record of this run
        appears after ``stop()`` returns (a window the analyser still works on after
        the engine's drain timeout is discarded, not recorded late)."""
        with self.lock:
            self.paused = pause
            thread = self.thread
            if self.engine is not None:
                self.engine.stop()
                self.engine = self.source = None
        if thread is not None and thread is not threading.current_thread():
            thread.join()  # bounded: Engine.run joins capture and drains with timeouts
        with self.lock:
            self.open_run = 0

    def restart(self) -> None:
        self.stop(pause=False)
        self.start()

    def close(self) -> None:
        """Stop for good (waiting for the last window, see ``stop``): nothing starts again."""
        with self.lock:
            self.closed = True
        self.stop()
        self.thread = None

    # -- streaming inputs (fast: push only) --------------------------------------
    def push_frame(self, rgb: np.ndarray | None) -> None:
        """(H, W, 3 or 4) uint8 from the browser's webcam stream."""
        if rgb is None or (self.paused and not self.running):
            return  # stopped: the browser may go on streaming, nothing is taken or counted
        if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
            raise ValueError(f"a webcam frame is (H, W, 3 or 4) uint8, got {type(rgb).__name__} "
                             f"{getattr(rgb, 'shape', '')}")
        if not self.running:
            self.start()
        src = self.source
        ready = src is not None and src.ready.is_set()  # not yet: the engine loads VAD + detector once
        self.view.frame_arrived(dropped=not ready)
        if ready:
            src.push_video(np.ascontiguousarray(rgb[..., :3], dtype=np.uint8))

    def push_audio(self, chunk) -> None:
        """(rate, (n,) or (n, ch) samples) from the browser's microphone stream."""
        if chunk is None or (self.paused and not self.running):
            return  # stopped: nothing is taken or counted
        rate, samples = chunk
        samples = np.asarray(samples)
        if samples.size == 0:
            return
        if not self.running:
            self.start()
        self.view.audio_arrived(len(samples) / float(rate), int(rate))
        src = self.source
        if src is not None and src.ready.is_set():
            src.push_audio(samples, int(rate))

    def _analyse(self, window: Window, run: int) -> Result:
        """The analyser worker's call: the served model, its answer streamed to the view."""
        self.view.stream_begins(run, window.index)
        try:
            return self.holder.analyse(window, on_partial=self.view.streamed)
        finally:
            self.view.in_flight = None
