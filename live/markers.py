"""Event markers: stimulus onsets, task phases, questionnaire moments on a session's
timeline, and the event fields every window record carries.

A ``Marker`` is one event at one time (record: ``to_json``), from a file's events table
(``load_events``), an LSL marker stream (``live.lsl.MarkerInlet``) or the page's mark
event control (``page_marker``). ``MarkerTimeline`` holds a session's markers
(thread-safe, in time order) and gives each window its ``event`` / ``condition`` (in
force at its start) and ``events`` (``fields(start, end)``). The record, the table
format and the window-field rule: docs/study.md "Markers and LSL".

Using it (what ``live.run --events`` does; a study runner does the same per recording)::

    timeline = MarkerTimeline(load_events("events.csv"))
    timeline.subscribe(log.append_json)             # every marker, those already held too
    Engine(source, analyser, cfg, markers=timeline, on_window=...)

The engine calls ``timeline.fields`` when it hands out each window record
(``live.engine.WindowEvent.to_json``), so live markers that arrive while a window is
analysed still reach it. Clock rule: docs/study.md "Markers and LSL".
"""
from __future__ import annotations

import bisect
import csv
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

EVENT_COLUMNS = ("time_s", "event")  # required, in media seconds / free text
OPTIONAL_COLUMNS = ("condition",)
NO_MARKER = {"event": None, "condition": None, "events": []}  # a window before any marker
MAX_EVENT_CHARS = 200  # an event or condition name longer than this is a mistake (a pasted paragraph)


class EventsError(ValueError):
    """An events table that cannot be used: names the file, row and column."""


@dataclass(frozen=True)
class Marker:
    """One event. ``media_time``: s on the stream clock (a file's media time; a live
    session's clock since its start). ``lsl_time``: s on the LSL clock
    (``pylsl.local_clock``) when known; ``wall_time``: Unix time when known."""

    event: str
    condition: str | None
    media_time: float
    lsl_time: float | None = None
    wall_time: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.event, str) or not self.event.strip():
            raise ValueError(f"a marker needs a non-empty event name, got {self.event!r}")
        if not math.isfinite(self.media_time):
            raise ValueError(f"marker {self.event!r}: media time must be finite, got {self.media_time}")

    def to_json(self) -> dict:
        return {"type": "marker", "event": self.event, "condition": self.condition,
                "media_time": round(self.media_time, 4),
                "lsl_time": None if self.lsl_time is None else round(self.lsl_time, 4),
                "wall_time": None if self.wall_time is None else round(self.wall_time, 3)}


def clean_name(value, what: str) -> str | None:
    """An event/condition name stripped (None when empty); ValueError when too long."""
    v = ("" if value is None else str(value)).strip()
    if len(v) > MAX_EVENT_CHARS:
        raise ValueError(f"{what} is {len(v)} characters long (at most {MAX_EVENT_CHARS}): {v[:40]!r}…")
    return v or None


def _row_marker(path: Path, n: int, row: dict) -> Marker:
    raw_t = (row.get("time_s") or "").strip()
    try:
        t = float(raw_t)
    except ValueError:
        t = math.nan
    if not math.isfinite(t) or t < 0:
        raise EventsError(f"{path}: row {n}, column time_s: {raw_t!r} is not a time in seconds "
                          "(a number >= 0, media seconds from the file's start)")
    try:
        event = clean_name(row.get("event"), "event")
        condition = clean_name(row.get("condition"), "condition")
    except ValueError as e:
        raise EventsError(f"{path}: row {n}: {e}") from None
    if event is None:
        raise EventsError(f"{path}: row {n}, column event: empty (every row names its event)")
    return Marker(event, condition, t)


def load_events(path: str | Path) -> list[Marker]:
    """An events table → markers sorted by time (ties keep the table's order).

    CSV (UTF-8, a header row): ``time_s`` (media seconds, >= 0), ``event`` (non-empty),
    optional ``condition``; no other columns. Rows count from 1 after the header.
    Raises EventsError naming the file, row and column of the first problem."""
    path = Path(path)
    if not path.is_file():
        raise EventsError(f"events table not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            missing = [c for c in EVENT_COLUMNS if c not in header]
            unknown = [c for c in header if c not in EVENT_COLUMNS + OPTIONAL_COLUMNS]
            if missing or unknown:
                raise EventsError(
                    f"{path}: header {','.join(header) or '(empty)'}: "
                    + (f"missing column(s) {', '.join(missing)}" if missing else
                       f"unknown column(s) {', '.join(unknown)}")
                    + "; an events table has columns time_s,event[,condition]")
            reader.fieldnames = header
            markers = []
            for n, row in enumerate(reader, 1):
                if None in row:  # more cells than header columns
                    raise EventsError(f"{path}: row {n}: {len(header) + len(row[None])} cells for "
                                      f"{len(header)} columns")
                markers.append(_row_marker(path, n, row))
    except UnicodeDecodeError as e:
        raise EventsError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise EventsError(f"{path}: not a CSV table ({e})") from None
    return sorted(markers, key=lambda m: m.media_time)


def page_marker(event: str, condition: str | None, media_time: float) -> Marker:
    """A marker set by hand on the page at session time ``media_time`` (now), stamped
    with the wall clock and, when pylsl is installed, the LSL clock."""
    return Marker(clean_name(event, "event") or "", clean_name(condition, "condition"), media_time,
                  lsl_time=_lsl_now(), wall_time=time.time())


def _lsl_now() -> float | None:
    try:
        from pylsl import local_clock
    except ImportError:  # LSL is optional for a page marker
        return None
    return local_clock()


SETTLE_S = 1.0  # s a window waits at most for a live marker source to catch up with its end


class MarkerTimeline:
    """A session's markers in time order. Thread-safe: an LSL inlet thread or the page
    adds while the engine reads.

    ``add(marker)`` inserts it and calls every subscriber with it;
    ``subscribe(fn, replay=True)`` registers ``fn(marker)`` (and calls it for the
    markers already held); ``fields(start, end)`` → ``{"event", "condition", "events"}``."""

    def __init__(self, markers=()) -> None:
        self._lock = threading.Lock()
        self._heard_cv = threading.Condition(self._lock)
        self._live = 0  # live marker sources (an LSL inlet) feeding this timeline
        self._heard = float("-inf")  # media time up to which they have delivered everything
        self._markers: list[Marker] = []
        self._times: list[float] = []
        self._subscribers: list[Callable[[Marker], None]] = []
        for m in markers:
            self.add(m)

    def add(self, marker: Marker) -> None:
        with self._lock:
            i = bisect.bisect_right(self._times, marker.media_time)  # ties: arrival order
            self._times.insert(i, marker.media_time)
            self._markers.insert(i, marker)
            subscribers = list(self._subscribers)
        for fn in subscribers:
            fn(marker)

    def subscribe(self, fn: Callable[[Marker], None], replay: bool = True) -> None:
        with self._lock:
            self._subscribers.append(fn)
            held = list(self._markers) if replay else []
        for m in held:
            fn(m)

    def listen(self) -> None:
        """A live source (an LSL inlet) feeds this timeline from now on: `settle` waits
        for it. Its markers come a little after their time (transport, the reader's
        thread), so a window must not be closed before they are in."""
        with self._lock:
            self._live += 1

    def heard(self, media_time: float) -> None:
        """The live source has delivered every marker stamped before ``media_time``."""
        with self._heard_cv:
            if media_time > self._heard:
                self._heard = media_time
                self._heard_cv.notify_all()

    def settle(self, end: float, timeout_s: float = SETTLE_S) -> bool:
        """Wait (at most ``timeout_s``) until the live sources have delivered their markers
        up to ``end`` (media s); True at once without live sources. False: timed out
        (a source that stopped answering; the window goes on with what is held)."""
        with self._heard_cv:
            if not self._live:
                return True
            return self._heard_cv.wait_for(lambda: self._heard >= end, timeout_s)

    def markers(self) -> list[Marker]:
        with self._lock:
            return list(self._markers)

    def __len__(self) -> int:
        return len(self._markers)

    def fields(self, start: float, end: float) -> dict:
        """The window ``[start, end)``'s event fields (see the module docstring)."""
        with self._lock:
            upto = bisect.bisect_right(self._times, start)
            event = self._markers[upto - 1].event if upto else None
            condition = next((m.condition for m in reversed(self._markers[:upto])
                              if m.condition is not None), None)
            lo = bisect.bisect_left(self._times, start)
            hi = bisect.bisect_left(self._times, end)
            inside = [{k: v for k, v in m.to_json().items() if k != "type"}
                      for m in self._markers[lo:hi]]
        return {"event": event, "condition": condition, "events": inside}
