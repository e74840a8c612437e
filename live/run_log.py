"""JSONL session log: ``frames.jsonl``, ``speech.jsonl``, ``windows.jsonl`` in one folder.

Its three methods plug straight into ``Engine(on_frame=, on_segment=, on_window=)``.
Lines are written as events happen, each whole and fsynced (``live.contract.appendfile.
AppendFile``), so a crash or Ctrl-C keeps what was logged; a write that fails (a full
disk) is an ``OSError`` naming the file and leaves no torn line. One process writes a
folder (an ``OutputLock`` on it: a second ``live.run`` on the same ``--out`` is refused
naming the first). Opening empties the three files (``live.run`` has already refused a
folder that is not empty unless ``--overwrite``). Thread-safe: analysed windows arrive
from the analyser thread.

Line formats (the command-line contract): docs/live.md (``live.run``), the window
record ``WindowEvent.to_json()`` (the same record study logs and the app write).
"""
from __future__ import annotations

import json
from pathlib import Path

from live.contract.appendfile import AppendFile, OutputLock
from live.engine import WindowEvent
from live.faces import TrackedFace
from live.frames import VideoFrame
from live.study_log import jsonable
from live.vad import Segment


NAMES = ("frames", "speech", "windows")


class SessionLog:
    def __init__(self, out_dir: str | Path) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = OutputLock(self.dir).acquire()  # OutputLocked: another process writes here
        self._files: dict[str, AppendFile] = {}
        try:
            for name in NAMES:
                path = self.dir / f"{name}.jsonl"
                path.write_bytes(b"")  # a fresh run's log
                self._files[name] = AppendFile(path, lock=False)  # the folder's lock covers it
        except BaseException:
            self.close()
            raise

    def _write(self, name: str, obj: dict) -> None:
        self._files[name].append(json.dumps(obj, separators=(",", ":"), default=jsonable))

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
        for f in self._files.values():
            f.close()
        self._lock.release()

    def __enter__(self) -> "SessionLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

