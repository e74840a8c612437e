"""One browser tab's state on the page (``PageSession``): its engine runs
(``live.page.runner``), its part of the study (``live.page.tab_study``) and what its page
shows (``live.page.view``), tied together: an analysed window becomes one record, kept
for the page and written to the study log. Also ``Tabs`` (each open tab's page session)
and ``ModelServer`` (any served model: the app passes ``model.serve.serving.ModelHolder``).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Protocol

from live.contract.media import HOP_S, WINDOW_S
from live.contract.result import Result
from live.engine import WindowEvent
from live.markers import Marker, MarkerTimeline
from live.page.runner import EngineRunner
from live.page.tab_study import TabStudy
from live.page.view import PageView
from live.study_log import LogOwners, StudyLog
from live.window import Window
from model.net.answers import ParsedAnswer


class ModelServer(Protocol):
    """What a page session needs of the served model (``ModelHolder`` fits)."""

    name: str  # shown on the page
    plan: str | None  # precision plan, None for full precision
    weights_mb: float  # MB of model weights (0 until loaded)
    state: str  # "loading" | "ready" | "failed"

    def analyse(self, window: Window,
                on_partial: Callable[[str, ParsedAnswer], None] | None = None) -> Result:
        """``window``'s result; ``on_partial(text, parsed)`` once per new chunk of the
        answer: the whole text so far and its parse (``model.net.answers.parse_answer``)."""

    def status(self) -> str: ...


class PageSession:
    """One browser tab: ``runner`` (start / stop, the streams pushed in), ``study`` (log,
    consent, self-report, markers) and ``view`` (what the page shows), sharing one lock.
    The engine starts on the first frame/chunk unless stopped."""

    def __init__(self, holder: ModelServer, window_s: float = WINDOW_S, hop_s: float = HOP_S,
                 gate: str = "always", log_root: str | Path = "sessions",
                 shared_log: StudyLog | None = None, owners: LogOwners | None = None) -> None:
        self.lock = threading.RLock()
        self.view = PageView()
        self.runner = EngineRunner(holder, self.lock, self.view, self._on_window, self._timeline,
                                   window_s, hop_s, gate)
        self.study = TabStudy(self.lock, self.runner.clock, log_root, shared_log, owners)

    def __deepcopy__(self, memo):
        # gr.State deep-copies the value its factory made for a new tab; that value is
        # already fresh and holds locks/threads, so it is handed over as is.
        return self

    def close(self) -> None:
        """Stop (waiting for the last window, see ``EngineRunner.stop``), then close the
        study log: every line is on disk when this returns. Drops what the tab kept
        (frames, records) so a closed tab holds no memory."""
        self.runner.close()
        self.study.set_logging(False)
        with self.lock:
            self.view.clear()

    def warnings(self) -> list[str]:
        """What the page warns about (``PageView.warnings``): engine, study log, missing media."""
        return self.view.warnings(self.runner, self.study.log_error)

    # -- the engine's callbacks (its threads) ------------------------------------------
    def _timeline(self, run: int) -> MarkerTimeline:
        return self.study.new_timeline(lambda m: self._on_marker(m, run))

    def _on_marker(self, m: Marker, run: int) -> None:
        with self.lock:
            if run == self.runner.open_run:
                self.study.write_marker(m, run)

    def _on_window(self, ev: WindowEvent, run: int) -> None:
        rec = ev.to_json(run=run, source="live", plan=self.runner.holder.plan)
        with self.lock:
            rec.update(self.study.fields())
            if run != self.runner.open_run:  # stopped: nothing is recorded after stop() returned
                return
            self.view.add(rec, has_result=ev.result is not None)
            # under the lock: stop()/set_logging() cannot close the log between the
            # run check above and this write
            self.study.record(rec, ev.window, self.runner.run_clock)


class Tabs:
    """Each open tab's ``PageSession`` by Gradio's session hash, so that closing a tab
    stops its engine and closes its log at once: Gradio keeps a closed tab's State for
    an hour before calling its ``delete_callback`` (that was the app's memory growth:
    every closed tab kept a running engine with full buffers)."""

    def __init__(self) -> None:
        self._by_hash: dict[str, PageSession] = {}
        self._lock = threading.Lock()

    def seen(self, session_hash: str | None, session: PageSession) -> PageSession:
        """Note ``session`` as the tab ``session_hash``'s; returns it."""
        if session_hash:
            with self._lock:
                if not session.runner.closed:  # a stream chunk that arrives after the unload
                    self._by_hash[session_hash] = session
        return session

    def closed(self, session_hash: str | None) -> bool:
        """The tab is gone: close its page session (waits for its last window). True if it had one."""
        with self._lock:
            session = self._by_hash.pop(session_hash, None)
        if session is not None:
            session.close()
        return session is not None

    def sessions(self) -> list[PageSession]:
        """Every open tab's page session (an LSL marker goes to each; the researcher's overview)."""
        with self._lock:
            return list(self._by_hash.values())

    def __len__(self) -> int:
        return len(self._by_hash)
