"""One browser tab's live loop (``LiveSession``): a push source + engine, the newest
results and the tab's study log. The page's streaming handlers only push into it; the
page's timer reads what the engine's callbacks left here (``live.page.render`` draws it).

Knows no model: the served model is any ``ModelServer`` (the app passes
``model.serve.serving.ModelHolder``). Also here: ``Tabs`` (each open tab's session, so a
closed tab's engine stops at once) and the process-memory helpers a server of many
sessions needs (``limit_malloc``, ``release_memory``).
"""
from __future__ import annotations

import collections
import ctypes
import gc
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from live.contract.result import Result
from live.engine import Engine, EngineConfig, WindowEvent
from live.markers import Marker, MarkerTimeline, page_marker
from live.sources import PushSource
from live.contract.appendfile import OutputLocked
from live.study_log import KEEP_MEDIA_NEEDS_CONSENT, LogOwners, StudyLog, StudyLogError, new_run_id, withdraw
from live.contract.media import HOP_S, WINDOW_S
from live.window import Window

FPS_SPAN_S = 2.0  # s of frame arrivals that "frames/s in" averages over
NO_MEDIA_WARN_S = 5.0  # s after start without frames / audio before the page warns
SELF_REPORT_MAX_CHARS = 64  # a self-reported emotion is a word or a short phrase
M_ARENA_MAX = -8  # glibc mallopt() parameter number
MALLOC_ARENAS = 2  # glibc malloc arenas (default: 8 per core), see limit_malloc()


class ModelServer(Protocol):
    """What a session needs of the served model (``ModelHolder`` fits)."""

    name: str  # shown on the page
    plan: str | None  # precision plan, None for full precision
    weights_mb: float  # MB of model weights (0 until loaded)
    state: str  # "loading" | "ready" | "failed"

    def analyse(self, window: Window, on_text: Callable[[str], None] | None = None) -> Result: ...

    def status(self) -> str: ...


class LiveSession:
    """One browser tab's live loop: a push source + engine + the newest results.

    Streaming handlers only push into the engine's buffers; the page reads
    ``records`` (window records, ``WindowEvent.to_json`` + run/source/plan), ``latest``
    (newest record with a result: analysed, pending or failed), ``partial`` (the
    explanation streaming in), ``frame``/``faces`` (newest frame and its tracked faces).
    Starts on the first frame/chunk unless stopped.
    """

    def __init__(self, holder: ModelServer, window_s: float = WINDOW_S, hop_s: float = HOP_S,
                 gate: str = "always", log_root: str | Path = "sessions",
                 shared_log: StudyLog | None = None, owners: LogOwners | None = None) -> None:
        self.holder, self.log_root = holder, Path(log_root)
        self.window_s, self.hop_s, self.gate = window_s, hop_s, gate
        self.engine: Engine | None = None
        self.source: PushSource | None = None
        self.thread: threading.Thread | None = None  # the newest run's engine thread
        self.shared_log, self.owners = shared_log, owners  # the app's log; who owns which id
        self.study: StudyLog | None = shared_log  # where this tab's windows are logged
        self.lock = threading.RLock()
        self.run_no = 0  # the newest run's id (``new_run_id``: unique across processes)
        self.open_run = 0  # the run whose records are still taken (0: none, after stop)
        self.paused = False  # Stop pressed: streams no longer auto-start the engine
        self.closed = False  # close() called (the tab is gone): nothing starts again
        self.started_at = 0.0
        self.error = ""
        self.records: list[dict] = []
        self.latest: dict | None = None
        self.partial, self.in_flight = "", None  # explanation streaming in, its (run, window index)
        self.frame, self.faces, self.frame_no = None, [], 0
        self.arrivals: collections.deque = collections.deque(maxlen=256)  # wall times of frames
        self.frames_in = self.frames_dropped = 0
        self.audio_s, self.audio_rate = 0.0, None
        self.sent: dict = {}  # what the page shows already (its refresh skips unchanged outputs)
        # the emotion the participant says they feel (None: not stated) and when it was set
        self.self_report: str | None = None
        self.self_report_at: float | None = None
        self.markers = MarkerTimeline()  # the newest run's event markers (page, LSL)
        self.participant_view = False  # the tab is a participant's: the page sends it no labels
        self.outlet = None  # the app's live.lsl.WindowOutlet (--lsl-out): analysed windows published
        self.lsl_markers = False  # the app reads an LSL marker stream (--markers): windows wait for it
        self.run_clock = None  # the newest run's session clock (kept after stop for its last windows)
        # (study folder, participant) of the log this tab wrote last: whose media a withdrawal deletes
        self.last_logged = None if shared_log is None else (shared_log.root, shared_log.participant)
        self.notice = ""  # what the last consent withdrawal deleted
        self.log_failed, self.log_error = 0, ""  # windows whose study-log line was not stored

    def __deepcopy__(self, memo):
        # gr.State deep-copies the value its factory made for a new tab; that value is
        # already fresh and holds locks/threads, so it is handed over as is.
        return self

    # -- lifecycle ---------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.engine is not None

    def start(self) -> None:
        with self.lock:
            if self.engine is not None or self.closed:
                return
            self.paused, self.error = False, ""
            self.run_no = new_run_id()  # (run, index) names one window in any study log
            run = self.open_run = self.run_no
            self.source = PushSource(name="browser")
            cfg = EngineConfig(hop_s=float(self.hop_s), window_s=float(self.window_s), gate=self.gate)
            self.markers = MarkerTimeline()
            if self.lsl_markers:
                self.markers.listen()
            self.markers.subscribe(lambda m: self._on_marker(m, run))
            eng = Engine(self.source, lambda w: self._analyse(w, run), cfg, markers=self.markers,
                         on_frame=self._on_frame, on_window=lambda ev: self._on_window(ev, run))
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
        """Stop (waiting for the last window, see ``stop``), then close the study log:
        every line is on disk when this returns. Drops what the tab kept (frames,
        records) so a closed tab holds no memory."""
        with self.lock:
            self.closed = True
        self.stop()
        self.set_logging(False)
        with self.lock:
            self.records, self.latest, self.frame, self.faces = [], None, None, []
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
        self.frames_in += 1
        self.arrivals.append(time.monotonic())
        if src is None or not src.ready.is_set():
            self.frames_dropped += 1  # engine still starting (loads VAD + detector once)
            return
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
        self.audio_rate = int(rate)
        self.audio_s += len(samples) / float(rate)
        src = self.source
        if src is not None and src.ready.is_set():
            src.push_audio(samples, int(rate))

    # -- engine callbacks ----------------------------------------------------------
    def _analyse(self, window: Window, run: int) -> Result:
        self.partial, self.in_flight = "", (run, window.index)  # partial first: refresh reads in_flight first

        def on_text(text: str) -> None:
            self.partial = text

        try:
            return self.holder.analyse(window, on_text=on_text)
        finally:
            self.in_flight = None

    def _on_frame(self, frame, faces) -> None:
        self.frame, self.faces = frame, list(faces)
        self.frame_no += 1

    def _on_window(self, ev: WindowEvent, run: int) -> None:
        rec = ev.to_json(run=run, source="live", plan=self.holder.plan)
        with self.lock:
            # the participant's own label, beside (never instead of) the model's "label"
            rec["self_report"], rec["self_report_at"] = self.self_report, self.self_report_at
            if run != self.open_run:  # stopped: nothing is recorded after stop() returned
                return
            self.records.append(rec)
            if ev.result is not None:
                self.latest = rec
            if self.outlet is not None:
                self.outlet.publish(rec, self.run_clock, live=True)
            # under the lock: stop()/set_logging() cannot close the log between the
            # run check above and this write
            if self.study is not None:
                try:
                    self.study.write_window(rec, ev.window.frames, ev.window.audio, ev.window.audio_rate)
                except (OSError, StudyLogError) as e:  # shown on the page from now on
                    self.log_failed += 1
                    self.log_error = (f"study log write failed for {self.log_failed} window(s), "
                                      f"last window {ev.window.index}: {e}")

    # -- event markers (live.markers) ------------------------------------------------
    def mark(self, event: str, condition: str | None = None) -> Marker:
        """The page's "mark event": a marker now on the running session's timeline.
        ValueError when nothing runs or the event name is empty / too long."""
        with self.lock:
            eng = self.engine
        if eng is None:
            raise ValueError("start the live session first: a marker is placed on its timeline")
        m = page_marker(event, condition, eng.clock.now())
        self.markers.add(m)
        return m

    def lsl_marker(self, event: str, condition: str | None, lsl_time: float) -> None:
        """A marker from the app's LSL inlet (``live.lsl``); ignored while nothing runs."""
        from live.lsl import lsl_marker

        with self.lock:
            eng = self.engine
        if eng is not None:
            self.markers.add(lsl_marker(event, condition, lsl_time, eng.clock))

    def lsl_heard(self, lsl_time: float) -> None:
        """The app's LSL inlet has delivered every marker stamped before ``lsl_time``."""
        from live.lsl import from_lsl

        with self.lock:
            eng, timeline = self.engine, self.markers
        if eng is not None:
            timeline.heard(from_lsl(lsl_time, eng.clock))

    def _on_marker(self, m: Marker, run) -> None:
        with self.lock:
            if run != self.open_run or self.study is None:
                return
            try:
                self.study.write({**m.to_json(), "run": run, "source": "live"})
            except (OSError, StudyLogError) as e:  # shown on the page, as a window's would be
                self.log_failed += 1
                self.log_error = f"study log write failed for marker {m.event!r}: {e}"

    # -- study log -----------------------------------------------------------------
    def set_logging(self, on: bool, participant: str = "", session: str = "",
                    keep_media: bool = False, owner: str | None = None, consent: bool = False) -> str:
        """Open/close this tab's own study log; returns the banner text ('' when off).
        With ``owners`` (the app's ``LogOwners``), the session id must be free or
        already ``owner``'s (the browser session's hash): StudyLogError otherwise.
        ``keep_media`` needs ``consent`` (the participant's, to storing recordings for
        research): StudyLogError otherwise, and nothing is opened. A session another
        process writes is refused (StudyLogError naming the owner). The flags must be
        bools and the ids text (StudyLogError: a page sends what its client says).
        Turning it off falls back to the app's ``shared_log`` (--log-session), if any."""
        for name, flag in (("logging", on), ("keep media", keep_media), ("consent", consent)):
            if not isinstance(flag, bool):
                raise StudyLogError(f"{name} must be true or false, got {type(flag).__name__}")
        with self.lock:
            if on and keep_media and not consent:
                raise StudyLogError(KEEP_MEDIA_NEEDS_CONSENT)
            if on and self.owners is not None:
                if owner is None:
                    raise StudyLogError("opening a study log needs the browser session that owns it")
                self.owners.claim(self.log_root, session, owner)
            if self.study is not None and self.study is not self.shared_log:
                self.study.close()
            self.study = self.shared_log
            if on:
                try:
                    self.study = StudyLog(self.log_root, session, participant, keep_media=keep_media,
                                          consent=consent)
                except OutputLocked as e:  # another process writes this session
                    raise StudyLogError(str(e)) from None
            if self.study is not None:
                self.last_logged = (self.study.root, self.study.participant)
        return self.study.banner() if self.study else ""

    def set_consent(self, consent: bool) -> str:
        """The page's consent box changed: the study log this tab writes (its own or the
        app's ``--log-session`` log: consent is the study's, not the tab's) records it
        from the next window on. Withdrawn also stops storing raw media and deletes the
        participant's stored media from the study folder (``live.study_log.withdraw``,
        an audit line says what): ``self.notice`` says what was deleted. Returns the
        banner."""
        if not isinstance(consent, bool):
            raise StudyLogError(f"consent must be true or false, got {type(consent).__name__}")
        with self.lock:
            if self.study is not None:
                self.study.set_consent(consent)  # under the log's lock: no media write in flight after
            who = self.last_logged
            banner = self.study.banner() if self.study else ""
        if not consent and who is not None:
            root, participant = who
            done = withdraw(root, participant, reason="consent withdrawn on the page")
            n = len(done["media_deleted"])
            self.notice = (f"Consent withdrawn: no raw media are stored from now on; {n} stored media "
                           f"file{'s' * (n != 1)} of participant {participant} deleted "
                           f"(recorded in {Path(root) / 'audit.jsonl'}).")
        return banner

    def set_self_report(self, label: str | None) -> str | None:
        """The emotion the participant says they feel, recorded as ``self_report`` (and
        ``self_report_at``, when it was set) in every window record from now on; empty
        or None clears it. One line of at most SELF_REPORT_MAX_CHARS characters
        (ValueError otherwise). Returns the stored text."""
        if label is not None and not isinstance(label, str):
            raise ValueError(f"a self-reported emotion is text, got {type(label).__name__}")
        text = " ".join((label or "").split())
        if len(text) > SELF_REPORT_MAX_CHARS:
            raise ValueError(f"a self-reported emotion is at most {SELF_REPORT_MAX_CHARS} characters")
        with self.lock:
            if (text or None) != self.self_report:
                self.self_report = text or None
                self.self_report_at = round(time.time(), 3) if text else None
            return self.self_report

    @property
    def own_log(self) -> bool:
        """The tab opened its log itself (not the app's start-up ``shared_log``)."""
        return self.study is not None and self.study is not self.shared_log

    # -- what the page shows ------------------------------------------------------
    def stats(self) -> dict:
        now = time.monotonic()
        recent = [t for t in self.arrivals if now - t <= FPS_SPAN_S]
        done = [r["latency_s"] for r in self.records if r["latency_s"] is not None]
        n = collections.Counter("analysed" if r["analysed"] else r["reason"] for r in self.records)
        try:
            import psutil

            rss = psutil.Process().memory_info().rss / 2**20
        except Exception:
            rss = float("nan")
        state = "running" if self.running else "stopped" if self.paused else "waiting for camera / microphone"
        return {
            "live session": state,
            "frames/s in": round(len(recent) / FPS_SPAN_S, 1) if self.running else 0.0,
            "frames in / dropped at start": f"{self.frames_in} / {self.frames_dropped}",
            "audio in": f"{self.audio_s:.1f} s at {self.audio_rate or '–'} Hz",
            "windows analysed / gated / dropped / errors":
                f"{n['analysed']} / {n['gated']} / {n['dropped']} / {n['error']}",
            "window latency last / mean (s)": f"{done[-1]:.2f} / {np.mean(done):.2f}" if done else "–",
            "faces in view": ", ".join(f"#{f.track}" for f in self.faces) or "none",
            "model": self.holder.name,
            "plan": self.holder.plan or "none",
            "memory (process RSS / model weights)": f"{rss:.0f} MB / {self.holder.weights_mb:.0f} MB",
        }

    def warnings(self) -> list[str]:
        out = [e for e in (self.error, self.log_error) if e]
        if self.running and time.monotonic() - self.started_at > NO_MEDIA_WARN_S:
            if not self.frames_in:
                out.append("No camera frames arrive: allow camera access for this page "
                           "(browser site settings), then press Record on the webcam.")
            if not self.audio_s:
                out.append("No microphone audio arrives: allow microphone access and press "
                           "Record on the microphone (analysis goes on with video only).")
        return out


class Tabs:
    """Each open tab's ``LiveSession`` by the page's session hash, so that closing a tab
    stops its engine and closes its log at once: Gradio keeps a closed tab's State for
    an hour before calling its ``delete_callback`` (that was the app's memory growth:
    every closed tab kept a running engine with full buffers)."""

    def __init__(self) -> None:
        self._by_hash: dict[str, LiveSession] = {}
        self._lock = threading.Lock()

    def seen(self, session_hash: str | None, session: "LiveSession") -> "LiveSession":
        """Note ``session`` as the tab ``session_hash``'s; returns it."""
        if session_hash:
            with self._lock:
                if not session.closed:  # a stream chunk that arrives after the unload
                    self._by_hash[session_hash] = session
        return session

    def closed(self, session_hash: str | None) -> bool:
        """The tab is gone: close its session (waits for its last window). True if it had one."""
        with self._lock:
            session = self._by_hash.pop(session_hash, None)
        if session is not None:
            session.close()
        return session is not None

    def sessions(self) -> list["LiveSession"]:
        """Every open tab's session (an LSL marker goes to each; the researcher's overview)."""
        with self._lock:
            return list(self._by_hash.values())

    def __len__(self) -> int:
        return len(self._by_hash)


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return None


def limit_malloc() -> None:
    """Cap glibc's malloc arenas (call once, at start). A web server runs requests on
    many worker threads; every thread that decoded frames got its own arena, and freed
    frames stayed mapped in each: the app's RSS grew ~80 MB per file analysis
    (bench/soak.py)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, MALLOC_ARENAS)


def release_memory() -> None:
    """After a file analysis or a closed tab: collect the cycles its engine left
    (callbacks referring back to their owners) and hand freed heap pages back."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
