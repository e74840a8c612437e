"""One browser tab's part of the study (``TabStudy``): its study log (its own or the
app's ``--log-session`` one; ``live.study_log``), consent, the self-report, the run's
event markers (page, LSL inlet) and analysed windows published on LSL (``--lsl-out``).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

from live.contract.appendfile import OutputLocked
from live.markers import Marker, MarkerTimeline, page_marker
from live.study_log import KEEP_MEDIA_NEEDS_CONSENT, LogOwners, StudyLog, StudyLogError, withdraw
from live.window import Window

SELF_REPORT_MAX_CHARS = 64  # a self-reported emotion is a word or a short phrase


class TabStudy:
    """A tab's study log, consent, self-report and markers. ``lock``: the tab's lock
    (``live.page.session.PageSession``), so that no window is written to a log being
    closed; ``clock()``: the running engine's stream clock (None while none runs)."""

    def __init__(self, lock: threading.RLock, clock: Callable, log_root: str | Path = "sessions",
                 shared_log: StudyLog | None = None, owners: LogOwners | None = None) -> None:
        self.lock, self.clock, self.log_root = lock, clock, Path(log_root)
        self.shared_log, self.owners = shared_log, owners  # the app's log; who owns which id
        self.log: StudyLog | None = shared_log  # where this tab's windows are logged
        # (study folder, participant) of the log this tab wrote last: whose media a withdrawal deletes
        self.last_logged = None if shared_log is None else (shared_log.root, shared_log.participant)
        self.notice = ""  # what the last consent withdrawal deleted
        self.log_failed, self.log_error = 0, ""  # windows whose study-log line was not stored
        # the emotion the participant says they feel (None: not stated) and when it was set
        self.self_report: str | None = None
        self.self_report_at: float | None = None
        self.markers = MarkerTimeline()  # the newest run's event markers (page, LSL)
        self.lsl_markers = False  # the app reads an LSL marker stream (--markers): windows wait for it
        self.outlet = None  # the app's live.lsl.WindowOutlet (--lsl-out): analysed windows published

    # -- study log -----------------------------------------------------------------
    def set_logging(self, on: bool, participant: str = "", session: str = "",
                    keep_media: bool = False, owner: str | None = None, consent: bool = False) -> str:
        """Open/close this tab's own study log; returns the banner text ('' when off);
        off falls back to the app's ``shared_log`` (--log-session), if any. StudyLogError,
        nothing opened: an id not free or not ``owner``'s (``owners``, keyed by the browser
        session's hash), ``keep_media`` without ``consent``, a study session another
        process writes, flags that are not bools (docs/app.md "Security and errors")."""
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
            if self.own_log:
                self.log.close()
            self.log = self.shared_log
            if on:
                try:
                    self.log = StudyLog(self.log_root, session, participant, keep_media=keep_media,
                                        consent=consent)
                except OutputLocked as e:  # another process writes this study session
                    raise StudyLogError(str(e)) from None
            if self.log is not None:
                self.last_logged = (self.log.root, self.log.participant)
        return self.banner()

    def banner(self) -> str:
        return self.log.banner() if self.log else ""

    @property
    def own_log(self) -> bool:
        """The tab opened its log itself (not the app's start-up ``shared_log``)."""
        return self.log is not None and self.log is not self.shared_log

    def set_consent(self, consent: bool) -> str:
        """The page's consent box changed: the log this tab writes (its own or the app's:
        consent is the study's) records it from the next window on. Withdrawn also stops
        storing media and deletes the participant's stored media (``live.study_log.withdraw``,
        with its audit line); ``self.notice`` says what was deleted. Returns the banner."""
        if not isinstance(consent, bool):
            raise StudyLogError(f"consent must be true or false, got {type(consent).__name__}")
        with self.lock:
            if self.log is not None:
                self.log.set_consent(consent)  # under the log's lock: no media write in flight after
            who = self.last_logged
            banner = self.banner()
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

    def fields(self) -> dict:
        """The self-report fields of a window record: the participant's own label,
        beside (never instead of) the model's "label"."""
        return {"self_report": self.self_report, "self_report_at": self.self_report_at}

    def record(self, rec: dict, window: Window, run_clock) -> None:
        """A live window's record: published on LSL when asked, written to the log (a
        failed write is counted and shown on the page). Call under ``lock``."""
        if self.outlet is not None:
            self.outlet.publish(rec, run_clock, live=True)
        if self.log is not None:
            try:
                self.log.write_window(rec, window.frames, window.audio, window.audio_rate)
            except (OSError, StudyLogError) as e:  # shown on the page from now on
                self.log_failed += 1
                self.log_error = (f"study log write failed for {self.log_failed} window(s), "
                                  f"last window {window.index}: {e}")

    # -- event markers (live.markers) ------------------------------------------------
    def new_timeline(self, on_marker: Callable[[Marker], None]) -> MarkerTimeline:
        """A fresh timeline for a new run, waiting for the LSL inlet when there is one."""
        self.markers = MarkerTimeline()
        if self.lsl_markers:
            self.markers.listen()
        self.markers.subscribe(on_marker)
        return self.markers

    def mark(self, event: str, condition: str | None = None) -> Marker:
        """The page's "mark event": a marker now on the running session's timeline.
        ValueError when nothing runs or the event name is empty / too long."""
        clock = self.clock()
        if clock is None:
            raise ValueError("start the live session first: a marker is placed on its timeline")
        m = page_marker(event, condition, clock.now())
        self.markers.add(m)
        return m

    def lsl_marker(self, event: str, condition: str | None, lsl_time: float) -> None:
        """A marker from the app's LSL inlet (``live.lsl``); ignored while nothing runs."""
        from live.lsl import lsl_marker

        clock = self.clock()
        if clock is not None:
            self.markers.add(lsl_marker(event, condition, lsl_time, clock))

    def lsl_heard(self, lsl_time: float) -> None:
        """The app's LSL inlet has delivered every marker stamped before ``lsl_time``."""
        from live.lsl import from_lsl

        clock = self.clock()
        with self.lock:
            timeline = self.markers
        if clock is not None:
            timeline.heard(from_lsl(lsl_time, clock))

    def write_marker(self, m: Marker, run: int) -> None:
        """A marker's study-log line (when logging). Call under ``lock``."""
        if self.log is None:
            return
        try:
            self.log.write({**m.to_json(), "run": run, "source": "live"})
        except (OSError, StudyLogError) as e:  # shown on the page, as a window's would be
            self.log_failed += 1
            self.log_error = f"study log write failed for marker {m.event!r}: {e}"
