"""Timestamped media chunks that sources hand to the engine.

``VideoFrame`` keeps the decoded picture in whatever form it arrived (an ``av``
frame straight from a decoder, or an RGB array) and converts to RGB only when
someone asks: most frames of a 30 fps stream are never looked at (detection runs a
few times a second, a window samples 8 frames), and the YUV→RGB conversion is a
large share of the per-frame cost.

A frame is stored at ``live.contract.media.ingest_size`` from the moment it is made (a
larger decoded picture scaled once in its own YUV format, a pushed array with PIL), and
a picture stored sideways or mirrored (``orient`` from
``live.sources.display_orientation``) is turned upright when its RGB is made;
``scale`` maps stored pixels back to the source. Why 640 px: docs/live.md "Frame size".
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from PIL import Image

from live.contract.media import AUDIO_RATE, INGEST_MAX_SIDE, ingest_size

# bytes: the most picture one stored frame holds, RGB of a square INGEST_MAX_SIDE
# picture (4:2:0 decoder planes take half; a 16:9 frame 56 % of that)
MAX_FRAME_BYTES = INGEST_MAX_SIDE * INGEST_MAX_SIDE * 3


class VideoFrame:
    """One picture at time ``t`` (seconds, stream clock), stored at
    ``ingest_size(source width, source height)``.

    ``width``, ``height``: the stored picture's size (px); ``scale``: source pixels per
    stored pixel (1.0 when the source was small enough; a stored-frame box times
    ``scale`` is the box in the source picture).
    ``rgb()`` → (height, width, 3) uint8, computed once and cached (thread-safe).
    ``rgb_scaled(max_side)`` → a smaller RGB view for detection, not cached.
    ``nbytes``: bytes of picture the frame holds now (decoder planes or RGB).
    """

    __slots__ = ("t", "width", "height", "scale", "_src", "_rgb", "_lock", "faces", "primary",
                 "crops", "_orient")

    def __init__(self, t: float, image, orient: tuple[bool, bool, bool] | None = None) -> None:
        """``orient`` (av frames only): (transpose, flip rows, flip columns) applied in
        that order to the decoded picture to make it upright; None: as decoded."""
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
            h, w = image.shape[:2]
            size = ingest_size(w, h)
            if size != (w, h):  # one resize on ingestion (PIL's bilinear filters when reducing)
                image = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(size, Image.BILINEAR))
            self._rgb = np.ascontiguousarray(image)
            self._src = None
        else:  # an av.VideoFrame
            w, h = int(image.width), int(image.height)
            size = ingest_size(w, h)
            if size != (w, h):  # scaled in its own pixel format: the source planes are freed
                image = image.reformat(width=size[0], height=size[1])
            self._src = image
            self._rgb = None
        self.scale = w / size[0]
        self._orient = orient if not isinstance(image, np.ndarray) and orient and any(orient) else None
        if self._orient is not None and self._orient[0]:
            size = size[::-1]  # the upright picture's width and height
        self.width, self.height = size

    def rgb(self) -> np.ndarray:
        if self._rgb is None:
            with self._lock:
                if self._rgb is None:
                    rgb = self._src.to_ndarray(format="rgb24")
                    if self._orient is not None:
                        rgb = upright(rgb, self._orient)
                    self._rgb = rgb
                    self._src = None  # the YUV planes are no longer needed
        return self._rgb

    def rgb_scaled(self, max_side: int) -> tuple[np.ndarray, float]:
        """RGB subsampled by a whole step so its longer side is about ``max_side`` or
        less; returns (image, scale) where ``scale`` maps its coordinates back to full
        size (stored pixels). Reuses the cached full RGB (converting once is cheaper than a scaled
        conversion, and sampled window frames need the full picture anyway)."""
        step = max(1, max(self.width, self.height) // max_side)
        img = self.rgb()
        if step == 1:
            return img, 1.0
        return np.ascontiguousarray(img[::step, ::step]), float(step)

    @property
    def nbytes(self) -> int:
        """Bytes of picture held now: the RGB array once converted, else the decoder's
        planes (at most ``MAX_FRAME_BYTES``). The 224 px face crops of sampled frames
        (150 KB per crop) are not counted."""
        if self._rgb is not None:
            return self._rgb.nbytes
        return sum(p.buffer_size for p in self._src.planes)

    def __repr__(self) -> str:
        return f"VideoFrame(t={self.t:.3f}, {self.width}x{self.height})"


def upright(rgb: np.ndarray, orient: tuple[bool, bool, bool]) -> np.ndarray:
    """(H, W, 3) → the picture transposed (when ``orient[0]``), then rows flipped
    (``orient[1]``) and columns flipped (``orient[2]``), contiguous."""
    transpose, flip_rows, flip_cols = orient
    if transpose:
        rgb = rgb.transpose(1, 0, 2)
    if flip_rows:
        rgb = rgb[::-1]
    if flip_cols:
        rgb = rgb[:, ::-1]
    return np.ascontiguousarray(rgb)


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
