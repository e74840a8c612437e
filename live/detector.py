"""Face detection: a small ``Protocol`` and its real default, mediapipe's Tasks
``FaceDetector`` running the two BlazeFace models.

The short-range model is cheap (~2 ms on this CPU) but only finds faces that fill a
good part of the frame (laptop distance); the full-range model (~5 ms) also finds
faces a few metres away. The detector runs the one that suits the expected face size
and tries the other when it finds nothing, so both distances are covered and the
common case (a face at laptop distance) pays for the cheap one.
"""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from live.face_models import resolve_face_models

MIN_SCORE = 0.5  # detector confidence below which a box is ignored
# Expected face width / frame width above which the short-range model is tried first.
# On test media it finds every face from ~0.13 of the frame width up, ~40 % at 0.11.
SHORT_RANGE_MIN_FRAC = 0.14
DETECT_MAX_SIDE = 640  # px: larger frames are subsampled (BlazeFace sees 128/192 px anyway)


@dataclass
class Detection:
    """``box``: (4,) float [x0, y0, x1, y1] in pixels of the image given; ``score`` in [0, 1]."""

    box: np.ndarray
    score: float


class FaceDetector(Protocol):
    def __call__(self, rgb: np.ndarray, face_frac: float | None = None) -> list[Detection]:
        """Faces in ``rgb`` (H, W, 3) uint8. ``face_frac``: expected face width as a
        fraction of the image width (a hint; None when nothing is tracked)."""
        ...


def no_faces(rgb: np.ndarray, face_frac: float | None = None) -> list[Detection]:
    """A ``FaceDetector`` that finds nothing: face detection off (faces absent)."""
    return []


_KEEP_ALIVE: list = []  # native detectors, never finalised mid-run (see __init__)
ALIGN = 64  # bytes: LiteRT copies input images that are not aligned to this


def _aligned(a: np.ndarray) -> np.ndarray:
    """``a`` in memory aligned to ALIGN bytes (a copy only when it is not already)."""
    if a.ctypes.data % ALIGN == 0 and a.flags.c_contiguous:
        return a
    raw = np.empty(a.nbytes + ALIGN, np.uint8)
    off = (-raw.ctypes.data) % ALIGN
    out = raw[off : off + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


@contextlib.contextmanager
def _quiet_stderr():
    """Silence native stderr while a detector is built: TFLite prints one warning per
    sparse tensor (dozens of lines) when it loads the full-range model."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)


class MediaPipeFaceDetector:
    """BlazeFace short- and full-range through mediapipe's Tasks ``FaceDetector``.

    ``model_dir``: folder with both ``.tflite`` files (see ``live.face_models``).
    ``models``: which to load, in order of preference when there is no hint.
    Calls are serialised by a lock (one detector instance is not re-entrant).
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        min_score: float = MIN_SCORE,
        models: tuple[str, ...] = ("full", "short"),
    ) -> None:
        if not 0.0 < min_score < 1.0:
            raise ValueError(f"min_score must be in (0, 1), got {min_score}")
        bad = [m for m in models if m not in ("short", "full")]
        if bad or not models:
            raise ValueError(f"models must be a non-empty subset of ('short', 'full'), got {models}")
        paths = resolve_face_models(model_dir)
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        self._mp = mp
        self._lock = threading.Lock()
        self.models = tuple(models)
        self._det = {}
        with _quiet_stderr():
            for name in self.models:
                opts = vision.FaceDetectorOptions(
                    base_options=BaseOptions(model_asset_path=str(paths[name])),
                    running_mode=vision.RunningMode.IMAGE,
                    min_detection_confidence=min_score,
                )
                self._det[name] = vision.FaceDetector.create_from_options(opts)
            # first runs print one-time runtime notices; have them here, silenced
            blank = np.zeros((64, 64, 3), np.uint8)
            for name in self.models:
                self._run(name, blank)
        self.calls = {name: 0 for name in self.models}  # model runs, for benchmarks
        # mediapipe's FaceDetector can deadlock when the garbage collector finalises it
        # (seen while another detector was running): keep every one alive until exit.
        _KEEP_ALIVE.extend(self._det.values())

    def _run(self, name: str, rgb: np.ndarray) -> list[Detection]:
        img = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=_aligned(rgb))
        if hasattr(self, "calls"):
            self.calls[name] += 1
        out = []
        for d in self._det[name].detect(img).detections:
            b = d.bounding_box
            box = np.array(
                [b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height], np.float32
            )
            out.append(Detection(box=box, score=float(d.categories[0].score)))
        return out

    def __call__(self, rgb: np.ndarray, face_frac: float | None = None) -> list[Detection]:
        rgb = np.ascontiguousarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"detector wants (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
        order = list(self.models)
        if face_frac is not None and "short" in order:
            first = "short" if face_frac >= SHORT_RANGE_MIN_FRAC else "full"
            if first in order:
                order.remove(first)
                order.insert(0, first)
        with self._lock:
            for name in order:
                found = self._run(name, rgb)
                if found:
                    return found
        return []

    def close(self) -> None:
        for d in self._det.values():
            d.close()
        self._det.clear()
