"""The event side of one analysis run (``live.run --events / --markers / --lsl-out``):
where its markers come from, where they are written, and the LSL outlet of its windows.

    ev = RunEvents(events="events.csv", markers=None, lsl_out=None, live=False)  # checks
    ev.start(out_dir, engine.clock)           # DIR/markers.jsonl, the LSL inlet's thread
    Engine(..., markers=ev.timeline, on_window=lambda e: ev.window(e.to_json()))
    ev.close()

``RunEvents(...)`` does every check that can fail before work (an events table's rows,
an LSL stream that does not answer, ``--markers`` on a file read as fast as possible)
and raises ValueError / ``live.lsl.LSLError`` naming the problem. ``live.study.analyse``
uses it per recording, its markers also written to the study log (a timeline subscriber).
"""
from __future__ import annotations

from pathlib import Path

from live.contract.appendfile import AppendFile
from live.markers import Marker, MarkerTimeline, load_events

MARKERS_FILE = "markers.jsonl"


class RunEvents:
    """``events``: an events-table path; ``markers``: ``lsl:NAME``; ``lsl_out``: an
    outlet stream name; ``live``: the run's source is stamped on a running clock
    (webcam, microphone, a file with ``--realtime``); ``paced_file``: the source is a file
    with ``--realtime`` (no events table then). ``timeline`` is the run's
    ``MarkerTimeline`` (None without a marker source: records keep null fields)."""

    def __init__(self, events: str | Path | None = None, markers: str | None = None,
                 lsl_out: str | None = None, live: bool = False, paced_file: bool = False) -> None:
        from live import lsl

        self.live = live
        if events and paced_file:
            raise ValueError("--events with --realtime: an events table is in media time, a file "
                             "paced in real time is stamped on the stream clock; drop --realtime")
        self.timeline = MarkerTimeline(load_events(events)) if events else None
        self.inlet = self.outlet = None
        self._log: AppendFile | None = None
        self._clock = None
        if markers:
            name = lsl.marker_stream_name(markers)
            if not live:
                raise ValueError(f"--markers {markers}: LSL markers need a live source (a webcam, a "
                                 "microphone, or a file with --realtime); a file's events come "
                                 "from --events")
            self.timeline = self.timeline or MarkerTimeline()
            self.inlet = lsl.MarkerInlet(name).open()
        if lsl_out:
            self.outlet = lsl.WindowOutlet(lsl_out)

    def start(self, out_dir: str | Path, clock) -> None:
        """Write every marker (those of the table first) to ``out_dir/markers.jsonl``
        and start reading the LSL inlet onto ``clock`` (the engine's)."""
        self._clock = clock
        if self.timeline is None:
            return
        self._log = AppendFile(Path(out_dir) / MARKERS_FILE)
        self.timeline.subscribe(self._write)
        if self.inlet is not None:
            from live.lsl import from_lsl, lsl_marker

            self.timeline.listen()  # windows wait for the inlet to catch up with their end
            self.inlet.start(lambda event, condition, t: self.timeline.add(
                lsl_marker(event, condition, t, self._clock)),
                on_heard=lambda t: self.timeline.heard(from_lsl(t, self._clock)))

    def _write(self, m: Marker) -> None:
        self._log.append_json(m.to_json())

    def window(self, rec: dict) -> None:
        """A window record as handed out: published on the outlet (analysed ones)."""
        if self.outlet is not None:
            self.outlet.publish(rec, self._clock, self.live)

    def close(self) -> None:
        if self.inlet is not None:
            self.inlet.close()
        if self.outlet is not None:
            self.outlet.close()
        if self._log is not None:
            self._log.close()
