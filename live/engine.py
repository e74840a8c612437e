"""The engine: source → buffers → face tracker + VAD gate → windows → analyser.

Threads (the path of one window, hop by hop: docs/architecture.md):

* capture: a live source (webcam, microphone, push, a file paced in real time) runs
  on its own thread(s) and only appends to the bounded buffers;
* processing (the caller's thread, in ``run()``): tracks faces on new frames, runs
  the VAD on new audio, assembles due windows and hands them to the analyser worker;
* analyser: ``AnalyserWorker``, newest window wins.

A file read as fast as possible has no capture thread: each decoded chunk is
appended and processed at once, so no frame is ever skipped and runs are repeatable.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from live.contract.result import Result, make_result
from live.worker import Analyser, AnalyserWorker, NullAnalyser
from live.buffers import AudioBuffer, FrameBuffer, audio_capacity_s, frame_capacity
from live.faces import FaceTracker, TrackedFace
from live.frames import AudioChunk, VideoFrame
from live.markers import NO_MARKER, MarkerTimeline
from live.sources import Clock, Source
from live.vad import CHUNK, HANGOVER_S, THRESHOLD, Segment, VADGate
from live.contract.media import HOP_S, N_FRAMES, WINDOW_S, check_window
from live.window import Gate, Window, WindowAssembler

log = logging.getLogger(__name__)

POLL_S = 0.01  # s the processing loop sleeps when a live source has nothing new
MAX_WAIT_S = 0.5  # s a live window waits for a late stream before it is built anyway
VIDEO_SLACK_S = 0.05  # s: a window is complete when a frame this close to its end arrived
CAPTURE_JOIN_S = 2.0  # s to wait for the capture thread to notice a stop
DRAIN_TIMEOUT_S = 30.0  # s to wait for the analyser's last window at the end


@dataclass
class EngineConfig:
    """How the engine cuts and gates windows. ``hop_s`` and ``window_s`` are checked
    by ``live.contract.media.check_window`` (finite, > 0, window <= ``MAX_WINDOW_S``); the
    buffers are sized from ``window_s`` (``live.buffers.frame_capacity`` /
    ``audio_capacity_s``). Face tracking settings belong to the ``FaceTracker``."""

    hop_s: float = HOP_S
    window_s: float = WINDOW_S
    n_frames: int = N_FRAMES
    gate: str = "always"  # "always" | "face" | "speech"
    vad_threshold: float = THRESHOLD
    vad_hangover_s: float = HANGOVER_S
    # Non-live sources only: wait for the analyser before handing it the next window,
    # so every window is analysed (offline studies). Live sources always drop stale ones.
    every_window: bool = False

    def __post_init__(self) -> None:
        check_window(self.window_s, self.hop_s)


@dataclass
class WindowEvent:
    """What happened to one window. ``to_json()`` is its record: the one format of
    windows.jsonl, study logs, the page and the ``/analyse_file`` API (each field is
    described once, in docs/live.md "The window record").

    analysed:   the analyser returned a result for it.
    reason:     None when analysed, else "gated" (the gate skipped it), "dropped" (a
                newer window replaced it in the queue), "error" (the analyser raised)
                or "pending" (no model could run yet; ``result["pending"]`` says why).
    result:     the analyser's ``Result`` (``error`` set for "error"); None when gated
                or dropped.
    queue_s:    s from hand-off to the analyser's start; None when it never ran.
    analyse_s:  s the analyser worked on it; None when it never ran.
    latency_s:  live sources, analysed windows: s from the window's end to its result
                on the stream clock; None otherwise (a file read as fast as possible
                has no wall-clock meaning for its media times).
    marks:      the window's event fields (``live.markers.MarkerTimeline.fields``:
                event, condition, events), set by the engine when it hands the record
                out; None: no markers (the fields are null / []).
    """

    window: Window
    analysed: bool
    result: Result | None
    reason: str | None
    queue_s: float | None = None
    analyse_s: float | None = None
    latency_s: float | None = None
    marks: dict | None = None

    def to_json(self, **context) -> dict:
        """The flat, JSON-able window record; ``context`` (e.g. run, source, plan) is
        appended as is."""
        r = {**make_result(), **(self.result or {})}
        r["explanation"] = r["explanation"] or r["text"]  # an answer without an explanation part
        rec = {**self.window.summary(), "analysed": self.analysed, "reason": self.reason, **r,
               "queue_s": _round(self.queue_s, 4), "analyse_s": _round(self.analyse_s, 4),
               "latency_s": _round(self.latency_s, 3), **(self.marks or {**NO_MARKER, "events": []})}
        rec.update(context)
        return rec


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(float(x), digits)


class _Sink:
    """What sources write to. Appending is all a capture thread does here."""

    def __init__(self, engine: "Engine") -> None:
        self.e = engine

    def video(self, frame: VideoFrame) -> None:
        self.e.frames.append(frame)
        self.e._wake.set()
        if self.e._inline:
            self.e._step()

    def audio(self, chunk: AudioChunk) -> None:
        self.e.audio.append(chunk.t, chunk.samples)
        self.e._wake.set()
        if self.e._inline:
            self.e._step()


class Engine:
    """Wire a source to an analyser. ``run()`` blocks until the end of the media,
    ``stop()`` (any thread) or Ctrl-C, and returns ``stats()``.

    Callbacks (called on the processing thread, except ``on_window`` for analysed or
    failed windows, which comes from the analyser thread):
    ``on_frame(frame, faces)``, ``on_segment(segment)``, ``on_window(WindowEvent)``.
    ``markers``: the session's ``live.markers.MarkerTimeline`` (an events table, an LSL
    inlet, the page): each window's event fields are read from it as it is handed out.
    """

    def __init__(
        self,
        source: Source,
        analyser: Analyser | None = None,
        config: EngineConfig | None = None,
        tracker: FaceTracker | None = None,
        vad: VADGate | None = None,
        on_frame: Callable[[VideoFrame, list[TrackedFace]], None] | None = None,
        on_segment: Callable[[Segment], None] | None = None,
        on_window: Callable[[WindowEvent], None] | None = None,
        clock: Clock | None = None,
        markers: MarkerTimeline | None = None,
    ) -> None:
        self.cfg = cfg = config or EngineConfig()
        self.source = source
        self.gate = Gate(cfg.gate)
        self.tracker = tracker or FaceTracker()
        self.vad = vad or VADGate(threshold=cfg.vad_threshold, hangover_s=cfg.vad_hangover_s)
        self.frames = FrameBuffer(*frame_capacity(cfg.window_s))
        self.audio = AudioBuffer(audio_capacity_s(cfg.window_s))
        self.windows = WindowAssembler(cfg.hop_s, cfg.window_s, cfg.n_frames)
        self.on_frame, self.on_segment, self.on_window = on_frame, on_segment, on_window
        self.markers = markers
        self.clock = clock or Clock()
        self.worker = AnalyserWorker(analyser or NullAnalyser(), self._analysed)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.RLock()  # one _step at a time
        self._inline = False
        self._frame_seq = 0
        self._video_until: float | None = None  # time of the last frame the tracker settled
        self._warned_short = False
        self._capture_error: BaseException | None = None
        self.n_frames = 0
        self.n_windows = 0
        self.skipped_frames = 0  # fell out of the buffer before processing (live only)
        self.window_cpu_s = 0.0  # CPU spent building + submitting windows
        self._cpu0 = self._cpu1 = 0.0
        self._progress = None

    # -- callbacks ---------------------------------------------------------------
    def _emit_window(self, ev: WindowEvent) -> None:
        if self.markers is not None:
            self.markers.settle(ev.window.end)  # a live marker source's late arrivals first
            ev.marks = self.markers.fields(ev.window.start, ev.window.end)
        if self.on_window is not None:
            self.on_window(ev)

    def _analysed(self, w: Window, result: Result | None, error, info: dict) -> None:
        timing = {"queue_s": info["queue_s"], "analyse_s": info["run_s"]}
        if error is not None:
            ev = WindowEvent(w, False, make_result(error=f"{type(error).__name__}: {error}"),
                             "error", **timing)
        elif (result or {}).get("pending"):
            ev = WindowEvent(w, False, result, "pending", **timing)
        else:
            latency = self.clock.now() - w.end if self.source.live else None
            ev = WindowEvent(w, True, result, None, latency_s=latency, **timing)
        self._emit_window(ev)

    # -- processing ----------------------------------------------------------------
    def _ready_until(self, final: bool) -> float | None:
        """Media time up to which the source's streams are complete (None: nothing yet)."""
        v = self._video_until
        parts = []
        if self.source.has_video:
            parts.append(None if v is None else v + VIDEO_SLACK_S)
        if self.source.has_audio:
            parts.append(self.vad.processed_until)
        known = [p for p in parts if p is not None]
        if not known:
            return None
        if final:
            return max(known)
        ready = min(known) if len(known) == len(parts) else None
        if self.source.live:
            # a live stream may lag or stall (a muted browser microphone): do not let
            # it hold windows back for more than MAX_WAIT_S
            cap = self.clock.now() - MAX_WAIT_S
            ready = cap if ready is None else max(ready, cap)
            ready = min(ready, max(known))  # never beyond the media we have
        return ready

    def _step(self, final: bool = False) -> None:
        with self._lock:
            new, next_seq = self.frames.since(self._frame_seq)
            self.skipped_frames += (next_seq - self._frame_seq) - len(new)
            self._frame_seq = next_seq
            settled = []
            for frame in new:
                self.windows.anchor(frame.t)
                settled += self.tracker.push(frame)
            held = self.tracker.held_since
            if held is not None and (final or (self.source.live and self.clock.now() - held > MAX_WAIT_S)):
                settled += self.tracker.flush()  # the end, or a stalled stream
            for frame in settled:
                self._video_until = frame.t
                self.n_frames += 1
                if self.on_frame is not None:
                    self.on_frame(frame, frame.faces)
            total, fed = self.audio.total, self.vad.samples_in
            segs = []
            if total >= fed + CHUNK or (final and total > fed):
                t_first = self.audio.time_of(fed)
                self.windows.anchor(t_first)
                segs = self.vad(self.audio.samples(fed, total), t=t_first)
            if final:
                segs += self.vad.flush()
            if self.on_segment is not None:
                for s in segs:
                    self.on_segment(s)
            ready = self._ready_until(final)
            if ready is None:
                return
            ends = self.windows.due(ready)
            if final:
                ends += self.windows.tail(ready)
            for end in ends:
                self._window(end)
            if self._progress is not None:
                self._progress.update(max(0.0, ready - self._progress.n))

    def _window(self, end: float) -> None:
        # this thread's CPU only: decoder threads run meanwhile in fast mode
        c0 = time.thread_time()
        w = self.windows.build(end, self.frames, self.audio, self.vad,
                               self.source.has_video, self.source.has_audio,
                               created=time.perf_counter())
        self.n_windows += 1
        first = self.frames.first_time()
        if w.has_video and first is not None and self.frames.dropped and first > w.start + VIDEO_SLACK_S \
                and not self._warned_short:
            self._warned_short = True  # a source faster than MAX_FPS
            log.warning("frame buffer (%d frames) holds less than one %.1f s window: window %d "
                        "starts at %.2f s but the oldest frame held is at %.2f s",
                        self.frames.capacity, self.cfg.window_s, w.index, w.start, first)
        if not self.gate(w):
            self.window_cpu_s += time.thread_time() - c0
            self._emit_window(WindowEvent(w, False, None, "gated"))
            return
        if self.cfg.every_window and not self.source.live:
            self.worker.wait_idle()
        dropped = self.worker.submit(w)
        self.window_cpu_s += time.thread_time() - c0
        if dropped is not None:
            self._emit_window(WindowEvent(dropped, False, None, "dropped"))

    # -- lifecycle -----------------------------------------------------------------
    def _capture(self, sink: _Sink) -> None:
        try:
            self.source.run(sink, self._stop)
        except BaseException as e:  # reported by run() on the processing thread
            self._capture_error = e
        finally:
            self._capture_done.set()
            self._wake.set()

    def stop(self) -> None:
        """Ask ``run()`` to finish (safe from any thread or a signal handler)."""
        self._stop.set()
        self._wake.set()

    def _load_models(self) -> None:
        """Load the models now, so stats measure processing rather than start-up."""
        if self.source.has_audio:
            prob = self.vad.prob
            if hasattr(prob, "warm_up"):
                prob.warm_up()
        if self.source.has_video:
            self.tracker.detector

    def _close(self, capture: threading.Thread | None, interrupted: bool) -> None:
        """Stop the capture, close the source, drain (or, interrupted, drop) the analyser."""
        self._inline = False
        self._stop.set()
        if capture is not None:
            capture.join(CAPTURE_JOIN_S)
        try:
            # Closing a decoder another thread still reads from crashes libav:
            # a capture thread stuck in a device read is left to die with the process.
            if capture is None or not capture.is_alive():
                self.source.close()
        finally:
            left = self.worker.stop(drain=not interrupted, timeout=DRAIN_TIMEOUT_S)
            if left is not None:
                self._emit_window(WindowEvent(left, False, None, "dropped"))
            if self._progress is not None:
                self._progress.close()
            self._cpu1 = time.process_time()

    def run(self, progress: bool = False) -> dict:
        """Open the source, process until it ends or ``stop()``, flush, drain the
        analyser, close. Ctrl-C stops cleanly too. Returns ``stats()``."""
        self.clock.start()
        self.source.open(self.clock)
        self._load_models()
        self._cpu0 = time.process_time()
        self.worker.start()
        sink = _Sink(self)
        self._capture_done = threading.Event()
        interrupted = False
        capture: threading.Thread | None = None
        if progress and not self.source.live and getattr(self.source, "duration", None):
            from tqdm import tqdm

            self._progress = tqdm(total=round(self.source.duration, 1), unit="s", leave=False,
                                  bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]")
        try:
            if self.source.live:
                capture = threading.Thread(target=self._capture, args=(sink,), name="capture",
                                           daemon=True)
                capture.start()
                while not self._capture_done.is_set() and not self._stop.is_set():
                    self._wake.wait(POLL_S)
                    self._wake.clear()
                    self._step()
                self._stop.set()
                capture.join(CAPTURE_JOIN_S)
            else:
                self._inline = True
                self._capture(sink)
            if self._capture_error is not None:
                raise self._capture_error
            self._step(final=True)
        except KeyboardInterrupt:
            interrupted = True
            log.info("interrupted: finishing")
        finally:
            self._close(capture, interrupted)
        self.interrupted = interrupted
        if self.worker.callback_error is not None:  # a window's on_window raised (a full disk)
            raise self.worker.callback_error
        return self.stats()

    def media_seconds(self) -> float:
        t0 = self.windows.t_first
        if t0 is None:
            return 0.0
        ends = [e for e in (self.frames.last_time(), self.audio.end_time()) if e is not None]
        if self.frames.last_time() is not None:
            # the last frame lasts one frame period; estimate it from the buffer
            fr = self.frames.between(self.frames.last_time() - 1.0, self.frames.last_time())
            if len(fr) > 1:
                ends.append(fr[-1].t + (fr[-1].t - fr[0].t) / (len(fr) - 1))
        return max(ends) - t0 if ends else 0.0

    def stats(self) -> dict:
        media = self.media_seconds()
        cpu = (self._cpu1 or time.process_time()) - self._cpu0
        return {
            "media_seconds": round(media, 3),
            "cpu_seconds": round(cpu, 3),
            "cpu_s_per_media_s": round(cpu / media, 4) if media > 0 else None,
            "frames": self.n_frames,
            "windows": self.n_windows,
            "dropped_windows": self.worker.dropped,
            "analyser_errors": self.worker.errors,
        }
