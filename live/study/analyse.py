"""``python -m live.study analyse``: every recording of a study folder, one study log each.

Each recording is analysed by ``live.run.analyse_source`` (the one analysis of a source,
the engine ``live.run`` runs; every window waits for the analyser, none dropped) and
its window records are written by a ``live.study_log.StudyLog`` (the live app's record
format: ``WindowEvent.to_json`` + ``source``, ``plan``, ``session``, ``participant``,
``wall_time``, ``consent``, ``consent_at``). A recording with an events table
(``--events-dir``) gets its marker records first and ``event``/``condition``/``events``
in every window record, as ``live.run --events`` (``live.run_events.RunEvents``).

Resumable (``--resume``: logs written under ``OUT/.partial/<session>/`` and renamed
when complete, so a log in OUT is always whole; withdrawn participants are never
analysed again); a recording that fails gets a line in ``OUT/failures.jsonl`` and the
others go on; one writer per study folder (``OutputLock`` on OUT). The details:
docs/study.md.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from live.contract.appendfile import AppendFile, private_dir
from live.contract.cli import one_line
from live.contract.files import PRIVATE_MODE
from live.run import analyse_source, make_tracker
from live.run_events import RunEvents
from live.sources import FileSource, SourceError
from live.study_log import StudyLog, StudyLogError

from . import FAILURES, LOG_SUFFIX, PARTIAL_DIR, withdrawn
from .recordings import Recording


class Stop(KeyboardInterrupt):
    """Raised inside a recording's engine (from ``on_frame``) to stop it cleanly."""


class StudyRun:
    """Analyse ``recordings`` into ``out`` (already checked and locked by the caller);
    ``redo``: also those with a complete log (each replaced when its new one is whole).

    ``analyser_for(session)`` gives a recording its analyser (a pool gives each its
    own session); ``args`` carries the live.run analysis options; ``jobs`` recordings
    run at once (threads; > 1 only over a pool)."""

    def __init__(self, out: Path, recordings: list[Recording], args, cfg, analyser_for,
                 jobs: int = 1, progress: bool = False, redo: bool = False) -> None:
        self.out, self.recordings, self.args, self.cfg = Path(out), recordings, args, cfg
        self.analyser_for, self.jobs, self.redo = analyser_for, max(1, jobs), redo
        self.stop = threading.Event()
        self.counts = {"recordings": len(recordings), "done_before": 0, "withdrawn": 0, "analysed": 0,
                       "failed": 0, "windows": 0}
        self._lock = threading.Lock()
        self._bars = _Bars(progress)

    def log_path(self, rec: Recording) -> Path:
        return self.out / f"{rec.session}{LOG_SUFFIX}"

    def run(self) -> dict:
        """Analyse every recording without a complete log; returns the counts."""
        shutil.rmtree(self.out / PARTIAL_DIR, ignore_errors=True)  # what a killed run left
        gone = withdrawn(self.out)
        todo = [r for r in self.recordings
                if (self.redo or not self.log_path(r).exists()) and r.participant not in gone]
        self.counts["withdrawn"] = sum(r.participant in gone for r in self.recordings)
        self.counts["done_before"] = len(self.recordings) - len(todo) - self.counts["withdrawn"]
        self._bars.start(len(todo))
        with AppendFile(self.out / FAILURES) as failures:
            try:
                if self.jobs == 1:
                    for rec in todo:
                        self._one(rec, failures)
                else:
                    with ThreadPoolExecutor(self.jobs, thread_name_prefix="recording") as pool:
                        try:
                            for f in [pool.submit(self._one, rec, failures) for rec in todo]:
                                f.result()
                        except BaseException:
                            self.stop.set()  # the running engines stop at their next frame
                            pool.shutdown(cancel_futures=True)
                            raise
            finally:
                self._bars.close()
                shutil.rmtree(self.out / PARTIAL_DIR, ignore_errors=True)
        return self.counts

    def _one(self, rec: Recording, failures: AppendFile) -> None:
        if self.stop.is_set():
            raise Stop()
        try:
            n = self._analyse(rec)
        except (SourceError, OSError, StudyLogError, ValueError) as e:
            failures.append_json({"recording": rec.path.name, "session": rec.session,
                                  "participant": rec.participant, "error": one_line(e),
                                  "wall_time": round(time.time(), 3)})
            with self._lock:
                self.counts["failed"] += 1
            self._bars.failed(rec, e)
        else:
            with self._lock:
                self.counts["analysed"] += 1
                self.counts["windows"] += n
        self._bars.recording_done()

    def _analyse(self, rec: Recording) -> int:
        """One recording → its complete log in OUT; the number of windows."""
        work = private_dir(self.out / PARTIAL_DIR / rec.session)
        try:
            source = FileSource(rec.path)
            source.open()  # an unreadable file fails here, naming itself
            duration = source.duration
            source.close()
            self._bars.expect(_expected_windows(duration, self.cfg))
            tracker = make_tracker(self.args, source)
            n = self._run_engine(rec, source, tracker, work)
            done = work / f"{rec.session}{LOG_SUFFIX}"
            os.chmod(done, PRIVATE_MODE)
            os.replace(done, self.log_path(rec))  # whole or absent: the resume rule
            _fsync_dir(self.out)
            return n
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _run_engine(self, rec: Recording, source, tracker, work: Path) -> int:
        errors: list[BaseException] = []
        n = 0

        def on_window(ev) -> None:
            nonlocal n
            try:
                slog.write(ev.to_json(source=rec.path.name, plan=self.args.plan))
                n += 1
                self._bars.window()
            except (OSError, StudyLogError) as e:  # raised on the analyser thread: kept, re-raised below
                errors.append(e)

        def on_frame(frame, faces) -> None:
            if self.stop.is_set():
                raise Stop()

        # the recording's events exactly as live.run --events (live.run_events), its
        # markers in the study log (first, before the windows) instead of markers.jsonl
        events = RunEvents(events=rec.events)
        try:
            with StudyLog(work, rec.session, rec.participant, consent=rec.consent) as slog:
                if events.timeline is not None:
                    events.timeline.subscribe(lambda m: slog.write(m.to_json()))
                engine = analyse_source(source, self.analyser_for(rec.session), self.cfg, tracker,
                                        on_frame=on_frame, on_window=on_window, markers=events.timeline)
        finally:
            events.close()
        if engine.interrupted:
            raise KeyboardInterrupt()
        if errors:
            raise errors[0]
        return n


def _expected_windows(duration: float | None, cfg) -> int:
    """About how many windows a recording of ``duration`` s gives (for the progress bar)."""
    if not duration:
        return 0
    return max(1, math.floor((duration - cfg.window_s) / cfg.hop_s) + 1)


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (a power cut after it keeps the new name)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Bars:
    """The tqdm bars: recordings (position 0) and windows (position 1) on stderr."""

    def __init__(self, on: bool) -> None:
        self.on = on
        self.rec = self.win = None
        self._lock = threading.Lock()

    def start(self, n: int) -> None:
        if self.on:
            from tqdm import tqdm

            self.rec = tqdm(total=n, unit="rec", desc="recordings", position=0, file=sys.stderr)
            self.win = tqdm(total=0, unit="win", desc="windows", position=1, file=sys.stderr)

    def expect(self, n: int) -> None:
        if self.win is not None:
            with self._lock:
                self.win.total += n
                self.win.refresh()

    def window(self) -> None:
        if self.win is not None:
            with self._lock:
                self.win.update()

    def recording_done(self) -> None:
        if self.rec is not None:
            with self._lock:
                self.rec.update()

    def failed(self, rec: Recording, err: BaseException) -> None:
        msg = f"note: {rec.path.name} could not be analysed ({one_line(err)}): listed in {FAILURES}"
        if self.rec is not None:
            self.rec.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

    def close(self) -> None:
        for bar in (self.win, self.rec):
            if bar is not None:
                bar.close()
