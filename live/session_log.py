"""JSONL session log: ``frames.jsonl``, ``speech.jsonl``, ``windows.jsonl`` in one folder.

Its three methods plug straight into ``Engine(on_frame=, on_segment=, on_window=)``.
Lines are written as events happen (flushed per line, so a crash or Ctrl-C keeps
what was logged). Thread-safe: analysed windows arrive from the analyser thread.

Line formats (the command-line contract):
  frames.jsonl   {"t": s, "faces": [{"track": id, "box": [x0, y0, x1, y1], "score": s}]}
  speech.jsonl   {"start": s, "end": s}
  windows.jsonl  the window record, ``WindowEvent.to_json()`` (fields: docs/live.md
                 "The window record"; the same record study logs and the app write)
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

from .engine import WindowEvent
from .faces import TrackedFace
from .frames import VideoFrame
from .study_log import jsonable
from .vad import Segment


class SessionLog:
    def __init__(self, out_dir: str | Path) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._files = {
            name: open(self.dir / f"{name}.jsonl", "w", encoding="utf-8")
            for name in ("frames", "speech", "windows")
        }

    def _write(self, name: str, obj: dict) -> None:
        line = json.dumps(obj, separators=(",", ":"), default=jsonable)
        with self._lock:
            f = self._files[name]
            f.write(line + "\n")
            f.flush()

    def frame(self, frame: VideoFrame, faces: list[TrackedFace]) -> None:
        self._write("frames", {"t": round(frame.t, 4), "faces": [f.to_json() for f in faces]})

    def segment(self, seg: Segment) -> None:
        self._write("speech", seg.to_json())

    def window(self, ev: WindowEvent) -> dict:
        """Writes the window's record; returns it (for whoever also publishes it)."""
        rec = ev.to_json()
        self._write("windows", rec)
        return rec

    def close(self) -> None:
        with self._lock:
            for f in self._files.values():
                f.close()

    def __enter__(self) -> "SessionLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

