"""Lab Streaming Layer: a marker inlet in, the analysed windows out (``pylsl``; liblsl
ships in its wheel).

* ``MarkerInlet(name)``: ``--markers lsl:NAME``. ``open()`` resolves the stream by
  name (``RESOLVE_TIMEOUT_S``; LSLError naming it), ``start(fn)`` pulls on a thread and
  calls ``fn(event, condition, lsl_time)`` per sample, ``lsl_time`` mapped onto this
  machine's LSL clock (``proc_clocksync``).
* ``WindowOutlet(name)``: ``--lsl-out NAME``, the streams ``NAME`` (JSON per analysed
  window) and ``NAME-values`` (float32), stamped with the window's end on the LSL clock.
* ``lsl_offset`` / ``from_lsl``: the clock rule between the stream clock (``live.sources.Clock``)
  and the LSL clock.

Channels, stream types and the clock rule: docs/study.md "Markers and LSL".
"""
from __future__ import annotations

import json
import math
import threading
import time
from typing import Callable

from live.markers import Marker

RESOLVE_TIMEOUT_S = 5.0  # s to wait for a named marker stream to answer
PULL_TIMEOUT_S = 0.1  # s one pull waits; bounds how long stop() takes
INLET_BUFFER_S = 360  # s of markers liblsl keeps for a slow reader
STREAM_TYPE = "OmniEmotion"
VALUES_TYPE = "OmniEmotionValues"
VALUE_CHANNELS = ("speech_ratio", "face_present")
SPEC_PREFIX = "lsl:"


class LSLError(RuntimeError):
    """An LSL stream that cannot be used (not found, pylsl missing)."""


def _pylsl():
    try:
        import pylsl
    except ImportError as e:  # pragma: no cover - pylsl is in requirements.txt
        raise LSLError(f"LSL needs the pylsl package: {e}") from None
    return pylsl


def marker_stream_name(spec: str) -> str:
    """``"lsl:NAME"`` → NAME; ValueError for any other spec."""
    name = spec[len(SPEC_PREFIX):].strip() if spec.startswith(SPEC_PREFIX) else ""
    if not name:
        raise ValueError(f"--markers {spec!r}: expected lsl:NAME (the name of an LSL marker stream)")
    return name


def lsl_offset(clock) -> float:
    """s to add to a session-clock time to get LSL time, read now. Both are monotonic
    clocks (on Linux both are CLOCK_MONOTONIC); reading them back to back bounds the
    error by the bracket (microseconds), re-read on every call so no drift builds up."""
    from pylsl import local_clock

    a = local_clock()
    t = clock.now()
    b = local_clock()
    return (a + b) / 2 - t


def from_lsl(lsl_time: float, clock) -> float:
    """An LSL time (s) → session-clock time (s)."""
    return lsl_time - lsl_offset(clock)


def lsl_marker(event: str, condition: str | None, lsl_time: float, clock) -> Marker:
    """A marker that came in on LSL, placed on the stream ``clock``; ``wall_time`` is
    when it is placed (an LSL sample carries no wall time)."""
    return Marker(event, condition, from_lsl(lsl_time, clock), lsl_time=lsl_time, wall_time=time.time())


class MarkerInlet:
    """A named LSL marker stream, read on a thread (see the module docstring)."""

    def __init__(self, name: str, timeout_s: float = RESOLVE_TIMEOUT_S) -> None:
        self.name, self.timeout_s = name, timeout_s
        self._inlet = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.received = 0

    def open(self) -> "MarkerInlet":
        pylsl = _pylsl()
        found = pylsl.resolve_byprop("name", self.name, minimum=1, timeout=self.timeout_s)
        if not found:
            raise LSLError(f"no LSL stream named {self.name!r} answered within {self.timeout_s:g} s "
                           "(is the marker sender running, on this network?)")
        self.channels = found[0].channel_count()
        self._inlet = pylsl.StreamInlet(found[0], max_buflen=INLET_BUFFER_S,
                                        processing_flags=pylsl.proc_clocksync)
        self._inlet.open_stream(timeout=self.timeout_s)
        return self

    def start(self, on_marker: Callable[[str, str | None, float], None],
              on_heard: Callable[[float], None] | None = None) -> None:
        """Read on a thread: ``on_marker(event, condition, lsl_time)`` per marker, and
        ``on_heard(lsl_time)`` after each read that found the queue empty: every
        marker stamped before that LSL time has been delivered."""
        if self._inlet is None:
            raise RuntimeError("MarkerInlet.start before open()")
        self._thread = threading.Thread(target=self._pull, args=(on_marker, on_heard),
                                        name=f"lsl-{self.name}", daemon=True)
        self._thread.start()

    def _pull(self, on_marker, on_heard) -> None:
        from pylsl.util import LostError, TimeoutError as LSLTimeout

        pylsl = _pylsl()
        while not self._stop.is_set():
            asked = pylsl.local_clock()  # before the read: what was sent before now is in the queue
            try:
                sample, ts = self._inlet.pull_sample(timeout=PULL_TIMEOUT_S)
            except (LostError, LSLTimeout):  # the sender went away: liblsl reconnects when it is back
                self._stop.wait(PULL_TIMEOUT_S)
                continue
            if sample is None:
                if on_heard is not None:
                    on_heard(asked)
                continue
            event = str(sample[0]).strip()
            condition = str(sample[1]).strip() or None if len(sample) > 1 else None
            if event:
                self.received += 1
                on_marker(event, condition, ts)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(PULL_TIMEOUT_S * 20)
        if self._inlet is not None:
            self._inlet.close_stream()
            self._inlet = None


def window_sample(rec: dict, lsl_start: float | None, lsl_end: float | None) -> dict:
    """The JSON object published for one window record."""
    return {"index": rec["index"], "label": rec.get("label"), "labels": rec.get("labels") or [],
            "start": rec["start"], "end": rec["end"],
            "lsl_start": None if lsl_start is None else round(lsl_start, 4),
            "lsl_end": None if lsl_end is None else round(lsl_end, 4),
            "latency_s": rec.get("latency_s"), "event": rec.get("event"), "condition": rec.get("condition")}


class WindowOutlet:
    """Publishes analysed window records on LSL (see the module docstring).

    ``publish(rec, clock, live)``: ``rec`` is a window record; ``live`` says whether its
    times are on a running stream clock (a file read as fast as possible has media
    times with no LSL meaning: its samples carry null LSL times and are stamped now)."""

    def __init__(self, name: str) -> None:
        pylsl = _pylsl()
        if not name.strip():
            raise ValueError("--lsl-out needs a stream name")
        self.name = name
        info = pylsl.StreamInfo(name, STREAM_TYPE, 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, f"{name}-windows")
        vinfo = pylsl.StreamInfo(f"{name}-values", VALUES_TYPE, len(VALUE_CHANNELS), pylsl.IRREGULAR_RATE,
                                 pylsl.cf_float32, f"{name}-values")
        chans = vinfo.desc().append_child("channels")
        for c in VALUE_CHANNELS:
            chans.append_child("channel").append_child_value("label", c)
        self._text = pylsl.StreamOutlet(info)
        self._values = pylsl.StreamOutlet(vinfo)
        self._lock = threading.Lock()
        self.published = 0

    def publish(self, rec: dict, clock, live: bool) -> None:
        if not rec.get("analysed"):
            return
        offset = lsl_offset(clock) if live else None
        start, end = ((rec["start"] + offset, rec["end"] + offset) if live else (None, None))
        stamp = end if live else 0.0  # 0.0: liblsl stamps it now
        fp = rec.get("face_track")
        has_video = any(t is not None for t in rec.get("frame_times") or ())
        face = float(fp is not None) if has_video else math.nan
        with self._lock:  # one window's two samples together, windows in hand-out order
            self._text.push_sample([json.dumps(window_sample(rec, start, end))], stamp)
            self._values.push_sample([float(rec.get("speech_ratio") or 0.0), face], stamp)
            self.published += 1

    def close(self) -> None:
        self._text = self._values = None
