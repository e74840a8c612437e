"""Test media made on the spot: real speech (espeak-ng) and a real face photo
(``skimage.data.astronaut()``) encoded into files with ``av``.

The clip maker itself is part of the product (``live.testclip``, also a command line:
``python -m live.testclip --out clip.mp4``); this module re-exports it for the tests
and adds what only tests need. Deterministic and fast (a 6 s 640x480 clip encodes in
about a second).

Public helpers
--------------
``speak(text, path, rate_hz=16000) -> (samples,) float32``      (live.testclip)
``make_clip(path, seconds=6.0, ...) -> dict`` ground truth       (live.testclip)
``write_wav(samples, rate, path)``: 16-bit PCM wav               (live.testclip)
``face_image(size) -> (size, size, 3) uint8``, ``FACE_BOX_IN_CROP`` (live.testclip)
``write_y4m(frames, path)``: 4:2:0 y4m for Chromium's fake camera  (live.testclip)
``clip_frames(path) -> (n, H, W, 3) uint8``; ``cached_clip(name, **kw)``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import av
import numpy as np

from live.contract.media import AUDIO_RATE  # noqa: F401  (re-exported)
from live.testclip import (  # noqa: F401  (re-exported for the tests)
    BACKGROUND,
    FACE_BOX_IN_CROP,
    SPEECH_EDGE,
    face_image,
    make_clip,
    read_wav,
    resample as _resample_to,
    speak,
    write_wav,
    write_y4m,
)


def clip_frames(path: str | Path) -> np.ndarray:
    """Decode every video frame of a file to (n, H, W, 3) uint8 RGB (test helper)."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


_CACHE_DIR: Path | None = None
_CACHE: dict = {}


def cached_clip(name: str, **kwargs) -> dict:
    """``make_clip`` once per test process for each (name, kwargs): test modules share
    media without a conftest fixture. Files live in a per-process temp folder."""
    global _CACHE_DIR

    key = (name, tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        if _CACHE_DIR is None:
            _CACHE_DIR = Path(tempfile.mkdtemp(prefix="omni-media-"))
        _CACHE[key] = make_clip(_CACHE_DIR / f"{name}.mp4", **kwargs)
    return _CACHE[key]
