"""The analysis windows of a media file, computed once and replayed for every plan.

Through `live/` (its `Engine` with a `FileSource`: the same windows, face crops and
audio the live system would analyse) when it imports; otherwise the same window grid
and frame-sampling rule (`live.media.sample_frames`) over the file's frames, with faces
marked absent. Both give objects with the fields of `live.window.Window` that
`model.serve.analyser.OmniEmotionAnalyser.clip_from_window` reads.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from live.media import AUDIO_RATE, CROP_SIZE, HOP_S, N_FRAMES, WINDOW_S, sample_frames


@dataclass
class FileWindow:
    """A window from the fallback (no face tracking); fields as in `live.window.Window`,
    with faces zeros and face_present all False."""

    index: int
    start: float
    end: float
    frames: np.ndarray | None
    faces: np.ndarray
    face_present: np.ndarray
    audio: np.ndarray
    has_audio: bool = True
    has_video: bool = True
    speech_ratio: float = field(default=0.0)

    def summary(self) -> dict:
        return {"index": self.index, "start": round(self.start, 3), "end": round(self.end, 3)}


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


def uniform_windows(path: str | Path, hop_s: float, window_s: float) -> list[FileWindow]:
    """live's window grid (ends at t_first + window_s + k·hop_s) without the engine: the
    frames chosen by `live.media.sample_frames`, the matching audio, faces absent.
    Decodes the whole file."""
    from live.sources import SourceError, decode_audio, iter_video_frames

    path = Path(path)
    try:
        frames = [(f.t, f.rgb()) for f in iter_video_frames(path)]
        audio = decode_audio(path)
    except SourceError as e:
        raise ValueError(str(e)) from None
    if not frames:
        raise ValueError(f"no video frames in {path}")
    times = np.array([t for t, _ in frames])
    t0, duration = times[0], times[-1] - times[0] + (times[1] - times[0] if len(times) > 1 else 0.0)
    ends = list(np.arange(window_s, duration + 1e-9, hop_s)) or [duration]
    out = []
    for k, end in enumerate(ends):
        start = max(0.0, end - window_s)
        picked = sample_frames(times, t0 + start, t0 + end, N_FRAMES)
        n = int(round((end - start) * AUDIO_RATE))
        a0 = int(round(start * AUDIO_RATE))
        wav = np.zeros(n, np.float32)
        if audio is not None:
            part = audio[a0 : a0 + n]
            wav[: len(part)] = part
        out.append(
            FileWindow(
                index=k,
                start=float(start),
                end=float(end),
                frames=np.stack([frames[i][1] for i in picked]),
                faces=np.zeros((N_FRAMES, CROP_SIZE, CROP_SIZE, 3), np.uint8),
                face_present=np.zeros(N_FRAMES, bool),
                audio=wav,
                has_audio=audio is not None,
            )
        )
    return out


def load_windows(
    path: str | Path,
    hop_s: float = HOP_S,
    window_s: float = WINDOW_S,
    max_windows: int | None = None,
    faces: bool = True,
    use_live: bool = True,
) -> tuple[list, str]:
    """(windows, how) for `path`; `max_windows` keeps that many, spread evenly over the
    file. `how` names the route ("live.engine" or "uniform (av, no faces)")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"source file not found: {path}")
    windows, how = None, "uniform (av, no faces)"
    if use_live:
        try:
            windows = live_windows(path, hop_s, window_s, faces)
            how = "live.engine" + ("" if faces else " (face detection off)")
        except ImportError:
            windows = None
    if windows is None:
        windows = uniform_windows(path, hop_s, window_s)
    if not windows:
        raise ValueError(f"no analysis windows in {path}")
    if max_windows is not None and len(windows) > max_windows:
        keep = np.linspace(0, len(windows) - 1, max_windows).round().astype(int)
        windows = [windows[i] for i in sorted(set(keep.tolist()))]
    return windows, how
