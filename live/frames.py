"""Timestamped media chunks that sources hand to the engine.

``VideoFrame`` keeps the decoded picture in whatever form it arrived (an ``av``
frame straight from a decoder, or an RGB array) and converts to RGB only when
someone asks: most frames of a 30 fps stream are never looked at (detection runs a
few times a second, a window samples 8 frames), and the YUV→RGB conversion is a
large share of the per-frame cost.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from .media import AUDIO_RATE


class VideoFrame:
    """One picture at time ``t`` (seconds, session clock).

    ``rgb()`` → (H, W, 3) uint8, computed once and cached (thread-safe).
    ``rgb_scaled(max_side)`` → a smaller RGB copy for detection, not cached.
    """

    __slots__ = ("t", "width", "height", "_src", "_rgb", "_lock", "faces", "primary", "crops")

    def __init__(self, t: float, image) -> None:
        self.t = float(t)
        # set by the engine once the tracker has seen this frame:
        self.faces = None  # list[live.faces.TrackedFace] | None (None: not tracked yet)
        self.primary = None  # the tracker's primary track id in this frame, or None
        # face crops made from this frame, by track id: consecutive windows overlap
        # (a frame is sampled by up to window/hop windows), so each crop is made once
        self.crops: dict = {}
        self._lock = threading.Lock()
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(
                    f"video frame must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}"
                )
            self._rgb = np.ascontiguousarray(image)
            self._src = None
            self.height, self.width = image.shape[:2]
        else:  # an av.VideoFrame
            self._src = image
            self._rgb = None
            self.width, self.height = int(image.width), int(image.height)

    def rgb(self) -> np.ndarray:
        if self._rgb is None:
            with self._lock:
                if self._rgb is None:
                    self._rgb = self._src.to_ndarray(format="rgb24")
                    self._src = None  # the YUV planes are no longer needed
        return self._rgb

    def rgb_scaled(self, max_side: int) -> tuple[np.ndarray, float]:
        """RGB subsampled by a whole step so its longer side is about ``max_side`` or
        less; returns (image, scale) where ``scale`` maps its coordinates back to full
        size. Reuses the cached full RGB (converting once is cheaper than a scaled
        conversion, and sampled window frames need the full picture anyway)."""
        step = max(1, max(self.width, self.height) // max_side)
        img = self.rgb()
        if step == 1:
            return img, 1.0
        return np.ascontiguousarray(img[::step, ::step]), float(step)

    def __repr__(self) -> str:
        return f"VideoFrame(t={self.t:.3f}, {self.width}x{self.height})"


@dataclass
class AudioChunk:
    """``samples``: (n,) float32 mono at 16 kHz; ``t``: time of the first sample (s)."""

    t: float
    samples: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        x = np.asarray(self.samples)
        if x.ndim != 1:
            raise ValueError(f"audio chunk must be (n,) mono, got shape {x.shape}")
        self.samples = x.astype(np.float32, copy=False)

    @property
    def duration(self) -> float:
        return len(self.samples) / AUDIO_RATE
