"""The one home of the media contract every stage agrees on, capture to model: the media
constants, the media type `Clip`, the one zero-fill and the one frame-sampling rule.

Live windows, training preprocessing, the processor, the quantization harness and the
app all read these names; nothing else in the tree spells 16 kHz, 224 px or 8 frames.
The model's config defaults come from here too, so a checkpoint built with production
defaults expects exactly what the front end delivers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

AUDIO_RATE = 16_000  # Hz: all audio past the sources is 16 kHz mono float32 (Whisper's rate)
N_FRAMES = 8  # frames per window / clip (paper §4.4: the model's 8 frame positions)
CROP_SIZE = 224  # px, side of a square face crop (FaceXFormer's input)
FRAME_MAX_SIDE = 384  # px, long side frames are stored at for training (SigLIP sees 384×384)
WINDOW_S = 4.0  # s covered by one live window
HOP_S = 1.0  # s between live window ends
MAX_WINDOW_S = 10.0  # s: the longest window (the live buffers are sized from the window)
# px: the long side every video frame is stored at from ingestion on (sources,
# buffers, tracker, windows, training's file_window): a larger picture is downscaled
# once, as it is decoded or pushed, so buffer memory is bounded in bytes whatever the
# source resolution (4K costs what 640×360 does). Why 640: SigLIP sees 384×384, so
# 640 keeps 1.7× headroom for its square resize; the face detector already works on a
# 640 px picture (live.detector.DETECT_MAX_SIDE), so boxes are no finer than that; and
# a face at laptop-to-desk distance (≥ 1/4 of the frame width) is ≥ 160 px wide here,
# a crop of ≥ 240 px with its margin, so its 224 px crop is not upscaled. Smaller faces
# (a person across the room) lose detail a 4K source had; 720 px would cost 27 % more
# bytes per frame for 12 % more linear detail.
INGEST_MAX_SIDE = 640


def check_window(window_s, hop_s, names: tuple[str, str] = ("window_s", "hop_s")) -> None:
    """THE rule for a window and hop a user chose (engine config, CLI options, the
    app's controls): both finite numbers of seconds > 0, the window at most
    ``MAX_WINDOW_S``. Raises ValueError naming the option (``names``) and the value."""
    for name, v in zip(names, (window_s, hop_s)):
        try:
            x = float(v)
        except (TypeError, ValueError):
            x = math.nan
        if isinstance(v, (bool, str)) or not math.isfinite(x) or x <= 0:
            raise ValueError(f"{name} must be a finite number of seconds > 0, got {v!r}")
    if window_s > MAX_WINDOW_S:
        raise ValueError(f"{names[0]} must be at most {MAX_WINDOW_S:g} s, got {window_s:g}")


def ingest_size(width: int, height: int, max_side: int = INGEST_MAX_SIDE) -> tuple[int, int]:
    """THE downscale rule of ingestion: (width, height) a (width × height) picture is
    stored at. Unchanged when its long side is at most ``max_side``; else scaled so the
    long side is ``max_side``, aspect kept, both sides rounded to even numbers (4:2:0
    video halves them) and at least 2."""
    long = max(width, height)
    if long <= max_side:
        return int(width), int(height)
    s = max_side / long
    return (max(2, 2 * int(round(width * s / 2))), max(2, 2 * int(round(height * s / 2))))


# THE form of a missing modality (fields defined in ``live.window.Window``): windows,
# ``Clip`` (below) and training preprocessing all fill from these.
def no_frames() -> np.ndarray:
    """The ``frames`` of media without video: (0, 0, 0, 3) uint8."""
    return np.zeros((0, 0, 0, 3), np.uint8)


def no_faces(n: int = N_FRAMES, size: int = CROP_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``faces`` (n, size, size, 3) uint8 zeros and ``face_present`` (n,) False: no face."""
    return np.zeros((n, size, size, 3), np.uint8), np.zeros(n, bool)


def no_audio(n: int = 0) -> np.ndarray:
    """``audio`` of media without sound: (n,) float32 zeros (n = the window's samples)."""
    return np.zeros(n, np.float32)


@dataclass
class Clip:
    """THE media type, capture to model: one clip's frames, faces, face_present, audio,
    has_video, has_audio (shapes defined in ``live.window.Window``, a clip with its
    times and ids; training preprocessing and the processor take the same fields).

    A field left None is filled in: ``has_video`` / ``has_audio`` tell whether
    ``frames`` / ``audio`` were given; missing frames become (0, 0, 0, 3), missing audio
    (0,); missing faces become zero crops with ``face_present`` all False, and faces
    given without ``face_present`` count as present in every frame.
    """

    frames: np.ndarray | None = None
    faces: np.ndarray | None = None
    face_present: np.ndarray | None = None
    audio: np.ndarray | None = None
    has_video: bool | None = None
    has_audio: bool | None = None

    def __post_init__(self) -> None:
        if self.has_video is None:
            self.has_video = self.frames is not None
        if self.has_audio is None:
            self.has_audio = self.audio is not None
        if self.frames is None:
            self.frames = no_frames()
        if self.audio is None:
            self.audio = no_audio()
        if self.faces is None:
            self.faces, present = no_faces(len(self.frames) if self.has_video else N_FRAMES)
            if self.face_present is None:
                self.face_present = present
        if self.face_present is None:
            self.face_present = np.ones(len(self.faces), bool)


def sample_targets(start: float, end: float, n: int = N_FRAMES) -> np.ndarray:
    """(n,) float64 seconds: the centres of n equal slices of [start, end]."""
    return start + (np.arange(n) + 0.5) * (end - start) / n


def nearest_indices(times, targets) -> np.ndarray:
    """(len(targets),) int64: for each target, the index of the closest time in
    ``times`` ((N,) seconds, ascending, N >= 1); a tie goes to the earlier frame."""
    times = np.asarray(times, np.float64)
    if times.ndim != 1 or times.size == 0:
        raise ValueError(f"need (N,) frame times with N >= 1, got shape {times.shape}")
    targets = np.asarray(targets, np.float64)
    right = np.clip(np.searchsorted(times, targets), 0, times.size - 1)
    left = np.clip(right - 1, 0, times.size - 1)
    pick_left = np.abs(times[left] - targets) <= np.abs(times[right] - targets)
    return np.where(pick_left, left, right).astype(np.int64)


def sample_frames(times, start: float, end: float, n: int = N_FRAMES) -> np.ndarray:
    """THE frame-sampling rule: which of the available frames are a span's ``n`` frames.

    ``times``: (N,) seconds of every available frame, ascending; ``[start, end]``: the
    span (a live window, or a training clip's span on the same clock). Frame ``i`` is
    the available frame nearest to the centre of the i-th of ``n`` equal slices of the
    span, ``start + (i + 0.5) * (end - start) / n``; a tie goes to the earlier frame, and
    a frame may repeat when the span holds fewer than ``n`` frames.

    Returns (n,) int64 indices into ``times``. Live windows (``FrameBuffer.sample``),
    training preprocessing (``live.window.file_window``) and the quantization harness
    all sample with this function; the processor takes the ``n`` frames it is given.
    """
    return nearest_indices(times, sample_targets(start, end, n))
