"""Bounded, thread-safe ring buffers indexed by time.

Capture threads only ``append``; readers copy what they need under the lock. Both
buffers have a fixed capacity, so memory stays flat however long a session runs:
the oldest items fall out and are counted. The capacity is a bound in bytes too:
frames are stored at ``live.contract.media.ingest_size`` (long side <= 640 px), so a
``FrameBuffer`` holds at most ``capacity * MAX_FRAME_BYTES`` of pictures
(``max_bytes``) whatever the source resolution.
"""
from __future__ import annotations

import bisect
import math
import threading
from collections import deque

import numpy as np

from live.frames import MAX_FRAME_BYTES, VideoFrame
from live.contract.media import AUDIO_RATE, N_FRAMES, WINDOW_S, sample_frames

MAX_FPS = 60  # frames/s up to which a FrameBuffer sized by frame_capacity holds its seconds
FRAME_SLACK_S = 6.0  # s of frames held beyond one window (processing lag, late streams)
AUDIO_SLACK_S = 8.0  # s of audio held beyond one window (the VAD may lag behind)
AUDIO_GAP_S = 0.1  # s: a later chunk than this after the expected time leaves silence
FRAME_CAPACITY = 300  # frames: the default count bound of a bare FrameBuffer


def frame_capacity(window_s: float) -> tuple[int, float]:
    """(capacity, capacity_s) of the ``FrameBuffer`` for ``window_s`` s windows: it
    holds ``window_s + FRAME_SLACK_S`` seconds (300 frames at 30 fps for 4 s windows),
    and never more frames than that many seconds at ``MAX_FPS`` (a memory bound)."""
    seconds = window_s + FRAME_SLACK_S
    return int(math.ceil(seconds * MAX_FPS)), seconds


def audio_capacity_s(window_s: float) -> float:
    """Seconds an ``AudioBuffer`` holds for ``window_s`` s windows (12 s for 4 s)."""
    return window_s + AUDIO_SLACK_S


AUDIO_CAPACITY_S = audio_capacity_s(WINDOW_S)  # s: the default of a bare AudioBuffer


class FrameBuffer:
    """Last ``capacity`` frames, in time order, and (when ``capacity_s`` is given) only
    those of the last ``capacity_s`` seconds. Each append gets a sequence number
    (0, 1, 2, ...) so a reader can ask for everything new since its last visit."""

    def __init__(self, capacity: int = FRAME_CAPACITY, capacity_s: float | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if capacity_s is not None and not capacity_s > 0:
            raise ValueError(f"capacity_s must be > 0, got {capacity_s}")
        self.capacity, self.capacity_s = capacity, capacity_s
        self._items: deque[VideoFrame] = deque(maxlen=capacity)
        self._times: deque[float] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._appended = 0  # total ever appended = next sequence number

    def append(self, frame: VideoFrame) -> int:
        """Add a frame (time order expected; an out-of-order frame is a ValueError)."""
        with self._lock:
            if self._times and frame.t < self._times[-1]:
                raise ValueError(f"frame at t={frame.t} is older than the last ({self._times[-1]})")
            self._items.append(frame)
            self._times.append(frame.t)
            self._appended += 1
            if self.capacity_s is not None:
                while self._times[0] < frame.t - self.capacity_s:
                    self._items.popleft()
                    self._times.popleft()
            return self._appended - 1

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def max_bytes(self) -> int:
        """The most bytes of pictures the buffer can hold: ``capacity * MAX_FRAME_BYTES``."""
        return self.capacity * MAX_FRAME_BYTES

    def nbytes(self) -> int:
        """Bytes of pictures held now (``VideoFrame.nbytes`` summed), <= ``max_bytes``."""
        with self._lock:
            return sum(f.nbytes for f in self._items)

    @property
    def appended(self) -> int:
        return self._appended

    @property
    def dropped(self) -> int:
        """Frames that fell out of the buffer (oldest first)."""
        with self._lock:
            return self._appended - len(self._items)

    def last_time(self) -> float | None:
        with self._lock:
            return self._times[-1] if self._times else None

    def first_time(self) -> float | None:
        """Time of the oldest frame held (None if empty)."""
        with self._lock:
            return self._times[0] if self._times else None

    def since(self, seq: int) -> tuple[list[VideoFrame], int]:
        """Frames with sequence number >= ``seq`` still held, and the next ``seq``.
        Frames that already fell out are skipped (the caller can compare numbers)."""
        with self._lock:
            first = self._appended - len(self._items)
            start = max(seq, first) - first
            return list(self._items)[start:], self._appended

    def between(self, t0: float, t1: float) -> list[VideoFrame]:
        """Frames with t0 <= t <= t1."""
        with self._lock:
            times = list(self._times)
            a = bisect.bisect_left(times, t0)
            b = bisect.bisect_right(times, t1)
            return list(self._items)[a:b]

    def _snapshot(self) -> tuple[np.ndarray, list[VideoFrame]]:
        with self._lock:
            return np.fromiter(self._times, float, len(self._times)), list(self._items)

    def sample(self, start: float, end: float, n: int = N_FRAMES) -> list[VideoFrame | None]:
        """The ``n`` frames of the span [start, end] by the one sampling rule,
        ``live.contract.media.sample_frames``, over the frames held ([None] * n if empty)."""
        times, items = self._snapshot()
        if not items:
            return [None] * n
        return [items[k] for k in sample_frames(times, start, end, n)]


class AudioBuffer:
    """The last ``capacity_s`` seconds of 16 kHz mono audio on one sample clock.

    Sample ``n`` (counted from the first ever appended) is at time
    ``t0 + n / AUDIO_RATE``, where ``t0`` is the first chunk's time. A chunk stamped more
    than ``AUDIO_GAP_S`` later than the expected time means samples were lost (a
    stalled device): the gap is filled with silence so times stay right. A chunk
    stamped early is appended contiguously (the sample clock wins over jittery
    arrival stamps).
    """

    def __init__(self, capacity_s: float = AUDIO_CAPACITY_S, rate: int = AUDIO_RATE) -> None:
        if capacity_s <= 0:
            raise ValueError(f"capacity_s must be > 0, got {capacity_s}")
        self.rate = rate
        self.capacity = int(round(capacity_s * rate))
        self._buf = np.zeros(self.capacity, np.float32)
        self._lock = threading.Lock()
        self._total = 0  # samples ever appended (incl. filled gaps)
        self.t0: float | None = None
        self.gap_samples = 0  # silence inserted for lost audio

    def _write(self, x: np.ndarray) -> None:
        n = len(x)
        if n >= self.capacity:
            x, skipped = x[-self.capacity :], n - self.capacity
            self._total += skipped
            n = self.capacity
        pos = self._total % self.capacity
        first = min(n, self.capacity - pos)
        self._buf[pos : pos + first] = x[:first]
        self._buf[: n - first] = x[first:]
        self._total += n

    def append(self, t: float, samples: np.ndarray) -> None:
        x = np.asarray(samples, np.float32).reshape(-1)
        with self._lock:
            if self.t0 is None:
                self.t0 = float(t)
            else:
                expected = self.t0 + self._total / self.rate
                gap = int(round((t - expected) * self.rate))
                if gap > AUDIO_GAP_S * self.rate:
                    self.gap_samples += gap
                    self._write(np.zeros(gap, np.float32))
            self._write(x)

    @property
    def total(self) -> int:
        return self._total

    def end_time(self) -> float | None:
        """Time just after the last sample held."""
        with self._lock:
            return None if self.t0 is None else self.t0 + self._total / self.rate

    def samples(self, n0: int, n1: int) -> np.ndarray:
        """Copy of samples [n0, n1) by absolute sample number; parts that are not held
        (too old or not yet arrived) are zeros. (n1 - n0,) float32."""
        out = np.zeros(max(0, n1 - n0), np.float32)
        with self._lock:
            lo = max(n0, self._total - self.capacity, 0)
            hi = min(n1, self._total)
            if hi > lo:  # hi - lo <= capacity: one piece, maybe split by the wrap
                pos = lo % self.capacity
                k = min(hi - lo, self.capacity - pos)
                out[lo - n0 : lo - n0 + k] = self._buf[pos : pos + k]
                out[lo - n0 + k : hi - n0] = self._buf[: hi - lo - k]
        return out

    def between(self, t0: float, t1: float) -> np.ndarray:
        """Samples covering [t0, t1) on the sample clock, zero-filled where absent."""
        with self._lock:
            base = self.t0
        n = int(round((t1 - t0) * self.rate))
        if base is None:
            return np.zeros(n, np.float32)
        n0 = int(round((t0 - base) * self.rate))
        return self.samples(n0, n0 + n)

    def time_of(self, n: int) -> float:
        if self.t0 is None:
            raise ValueError("no audio yet")
        return self.t0 + n / self.rate
