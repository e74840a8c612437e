"""The analyser seam: a ``Protocol`` any model implements (it returns the contract's
``live.contract.result.Result``), two stand-ins, and the worker that runs one on its own thread with a newest-wins queue of one.

An analyser is ``__call__(window: live.window.Window) -> Result``. It may be slow;
the worker makes sure the live loop never waits for it: while it works on one window,
at most one more waits, and a newer window replaces the waiting one (the replaced
window is counted as dropped). An exception inside the analyser is logged (one line;
its traceback once per distinct error) and counted, and the worker goes on. An
exception in the result callback (a record that could not be stored) is kept in
``callback_error`` for the caller to raise, never swallowed.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Protocol, runtime_checkable

from live.contract.result import Result, make_result

from live.window import Window

log = logging.getLogger(__name__)

FAKE_DELAY_S = 0.5  # s the fake analyser takes per window
MAX_SEEN_ERRORS = 1000  # distinct analyser errors whose traceback is logged, per process
_SEEN_ERRORS: set[str] = set()  # "<Type>: <message>" already logged with a traceback
_SEEN_LOCK = threading.Lock()


@runtime_checkable
class Analyser(Protocol):
    def __call__(self, window: Window) -> Result:
        """Analyse one window; return ``make_result(...)``."""
        ...


class NullAnalyser:
    """Returns at once an empty result (no label)."""

    def __call__(self, window: Window) -> Result:
        return make_result(model="null")


class FakeAnalyser:
    """Sleeps ``delay_s`` (a stand-in for a model's latency, using no CPU), then
    returns a fixed-shape result. ``fail_on``: window indices that raise instead."""

    def __init__(self, delay_s: float = FAKE_DELAY_S, fail_on: set[int] | None = None) -> None:
        if delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s}")
        self.delay_s = delay_s
        self.fail_on = set(fail_on or ())
        self.calls = 0

    def __call__(self, window: Window) -> Result:
        self.calls += 1
        time.sleep(self.delay_s)
        if window.index in self.fail_on:
            raise RuntimeError(f"fake analyser failure on window {window.index}")
        face = "a face" if window.face_present.any() else "no face"
        return make_result(
            label="neutral" if window.speech_ratio < 0.5 else "happy",
            explanation=f"fake result for {window.start:.2f}-{window.end:.2f} s ({face})",
            model="fake",
        )


# on_done(window, result or None, error or None, info) with
# info = {"queue_s": s from submit to the analyser's start, "run_s": s in the analyser}
ResultCallback = Callable[[Window, Result | None, BaseException | None, dict], None]


class AnalyserWorker:
    """Runs ``analyser`` on a daemon thread. ``submit(window)`` never blocks and
    returns the window it displaced (dropped), if any."""

    def __init__(self, analyser: Analyser, on_done: ResultCallback | None = None) -> None:
        self.analyser = analyser
        self.on_done = on_done
        self._cv = threading.Condition()
        self._pending: Window | None = None
        self._submitted_at = 0.0  # perf_counter() when the pending window was submitted
        self._busy = False
        self._closed = False
        self.analysed = self.dropped = self.errors = 0
        self.callback_errors = 0  # windows whose result callback raised
        self.callback_error: Exception | None = None  # the first such exception
        self._thread = threading.Thread(target=self._loop, name="analyser", daemon=True)
        self._started = False

    def start(self) -> "AnalyserWorker":
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def submit(self, window: Window) -> Window | None:
        with self._cv:
            if self._closed:
                raise RuntimeError("analyser worker is stopped")
            old, self._pending = self._pending, window
            self._submitted_at = time.perf_counter()  # queue time counts from here
            if old is not None:
                self.dropped += 1
            self._cv.notify_all()
            return old

    def _log_failure(self, w: Window, e: Exception) -> None:
        """One line per failed window; the full traceback only the first time this
        error (type + message) is seen, so a model that fails on every window does
        not flood the log (the app sends tracebacks to its log file only)."""
        key = f"{type(e).__name__}: {e}"
        with _SEEN_LOCK:
            first = key not in _SEEN_ERRORS and len(_SEEN_ERRORS) < MAX_SEEN_ERRORS
            if first:
                _SEEN_ERRORS.add(key)
        log.error("analyser failed on window %d (%.2f-%.2f s): %s%s", w.index, w.start, w.end,
                  key.splitlines()[0] if key.strip() else type(e).__name__,
                  "" if first else " (seen before)", exc_info=e if first else None)

    def _callback_failed(self, w: Window, e: Exception) -> None:
        """The result callback raised: kept (the first one) for the caller to raise
        (``callback_error``; ``live.engine.Engine.run`` does), counted, one line logged.
        Never swallowed: a window whose record was not stored is not a success."""
        with self._cv:
            self.callback_errors += 1
            if self.callback_error is None:
                self.callback_error = e
        log.error("result callback failed on window %d: %s: %s", w.index, type(e).__name__, e)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is running or waiting (True) or ``timeout`` (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self._busy or self._pending is not None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def _loop(self) -> None:
        while True:
            with self._cv:
                while self._pending is None and not self._closed:
                    self._cv.wait()
                if self._pending is None:  # closed and nothing left
                    return
                w, self._pending, self._busy = self._pending, None, True
                submitted = self._submitted_at
            t0 = time.perf_counter()
            result, error = None, None
            try:
                result = self.analyser(w)
            except Exception as e:  # the live loop must survive any model failure
                error = e
                self._log_failure(w, e)
            info = {"queue_s": t0 - submitted, "run_s": time.perf_counter() - t0}
            with self._cv:
                if error is None:
                    self.analysed += 1
                else:
                    self.errors += 1
            if self.on_done is not None:
                try:
                    self.on_done(w, result, error, info)
                except Exception as e:  # e.g. the window's record could not be stored (a full disk)
                    self._callback_failed(w, e)
            with self._cv:
                self._busy = False
                self._cv.notify_all()

    def stop(self, drain: bool = True, timeout: float | None = None) -> Window | None:
        """Stop the worker. ``drain``: finish the waiting window first; otherwise it
        is returned (dropped, counted) without being analysed."""
        left = None
        with self._cv:
            if not drain and self._pending is not None:
                left, self._pending = self._pending, None
                self.dropped += 1
            self._closed = True
            self._cv.notify_all()
        if self._started:
            self._thread.join(timeout)
        return left
