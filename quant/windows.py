"""The analysis windows of a media file, computed once and replayed for every plan:
`live.window.Window`s cut by live's `Engine` from a `FileSource` (the same windows,
face crops and audio the live system would analyse).
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from live.contract.media import HOP_S, N_FRAMES, WINDOW_S


class _Collector:
    """An analyser for live's Engine that keeps every window and analyses nothing."""

    def __init__(self):
        self.windows = []
        self._lock = threading.Lock()

    def __call__(self, window) -> dict:
        with self._lock:
            self.windows.append(window)
        return {}


def live_windows(path: str | Path, hop_s: float, window_s: float, faces: bool = True) -> list:
    """Every window live's engine cuts from the file (every_window: none dropped)."""
    from live.detector import no_faces
    from live.engine import Engine, EngineConfig
    from live.faces import FaceTracker, default_detector
    from live.sources import FileSource

    collector = _Collector()
    cfg = EngineConfig(hop_s=hop_s, window_s=window_s, n_frames=N_FRAMES, every_window=True)
    # live's process-wide detector, never a fresh one: a mediapipe FaceDetector that is
    # garbage-collected closes itself through mediapipe's dispatcher from whatever
    # thread runs the GC, which deadlocked the next import here.
    detector = default_detector() if faces else no_faces
    tracker = FaceTracker(detector)
    Engine(FileSource(path), collector, cfg, tracker=tracker).run()
    return sorted(collector.windows, key=lambda w: w.index)


def load_windows(
    path: str | Path,
    hop_s: float = HOP_S,
    window_s: float = WINDOW_S,
    max_windows: int | None = None,
    faces: bool = True,
) -> tuple[list, str]:
    """(windows, how) for `path`; `max_windows` keeps that many, spread evenly over the
    file. `how` names the route ("live.engine", with or without face detection)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"source file not found: {path}")
    windows = live_windows(path, hop_s, window_s, faces)
    how = "live.engine" + ("" if faces else " (face detection off)")
    if not windows:
        raise ValueError(f"no analysis windows in {path}")
    if max_windows is not None and len(windows) > max_windows:
        keep = np.linspace(0, len(windows) - 1, max_windows).round().astype(int)
        windows = [windows[i] for i in sorted(set(keep.tolist()))]
    return windows, how
