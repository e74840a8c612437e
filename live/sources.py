"""Media sources: a file, a webcam, a microphone, and a push source fed from outside.

Every source hands ``VideoFrame`` / ``AudioChunk`` objects to a ``Sink`` (the engine's
buffers), stamped on the stream ``Clock``:

* ``FileSource``: media time from the file; with ``realtime=True`` it is paced to the
  wall clock and stamped ``clock start + media time``.
* ``PushSource`` and the device sources (``live.devices``: ``WebcamSource``,
  ``MicSource``): stamped on arrival.

``run(sink, stop)`` blocks until the media ends or ``stop`` is set; ``open()`` checks
the device or file first and raises ``SourceError`` naming it.

The one decode rule for files (docs/live.md "Recordings as phones make them"): a
decoded picture is turned upright following the container's display matrix
(``display_orientation`` reads it, ``VideoFrame`` applies it); audio goes through
``Resampler`` to 16 kHz mono; each video frame keeps its own timestamp.

A file's clock (``file_origin``) starts at the earliest start of its streams; its
frames are stamped on it by ``_video_time``. ``video_times`` / ``iter_video_frames``
(offline, for ``live.window.file_window``) and ``decode_audio`` (the one whole-file
audio decoder: ``Resampler``, as ``FileSource`` uses) read files on that same clock.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

from live.contract.cli import one_line
from live.frames import AudioChunk, VideoFrame
from live.contract.media import AUDIO_RATE
from live.resample import Resampler


class SourceError(RuntimeError):
    """A source cannot be used: missing/busy device, unreadable file, no video stream."""


class Clock:
    """The stream clock: monotonic seconds since ``start()`` (or construction)."""

    def __init__(self) -> None:
        self._origin = time.monotonic()

    def start(self) -> None:
        self._origin = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._origin


class Sink(Protocol):
    def video(self, frame: VideoFrame) -> None: ...

    def audio(self, chunk: AudioChunk) -> None: ...


class Source(Protocol):
    name: str
    has_video: bool
    has_audio: bool
    live: bool  # stamped on arrival (needs a capture thread); False: a file read in order

    def open(self, clock: Clock) -> None: ...

    def run(self, sink: Sink, stop: threading.Event) -> None: ...

    def close(self) -> None: ...


def file_origin(video, audio=None) -> float:
    """Seconds: where a file's clock starts, the earliest start time of its video and
    (first) audio stream (0 when the container does not say)."""
    starts = [float(st.start_time * st.time_base) for st in (video, audio)
              if st is not None and st.start_time is not None and st.time_base is not None]
    return min(starts) if starts else 0.0


def display_orientation(frame) -> tuple[bool, bool, bool] | None:
    """A decoded ``av.VideoFrame``'s display matrix → (transpose, flip rows, flip
    columns) that make it upright (``live.frames.upright``); None when it has none or it
    is the identity. The matrix [a b u; c d v; x y w] maps a stored pixel (x, y) to
    (a x + c y, b x + d y) on screen (ffmpeg's convention: ``rotate=90`` metadata shows
    the stored picture turned 90 degrees counter-clockwise, as ``ffmpeg`` itself plays
    it). Angles that are not a multiple of 90 degrees are left as decoded."""
    import av.sidedata.sidedata as sd

    data = frame.side_data.get(sd.Type.DISPLAYMATRIX) if len(frame.side_data) else None
    if data is None:
        return None
    a, b, _, c, d = np.frombuffer(bytes(data), dtype="<i4", count=5).astype(np.float64) / 65536.0
    if abs(abs(a) - 1) < 0.01 and abs(b) < 0.01 and abs(c) < 0.01 and abs(abs(d) - 1) < 0.01:
        orient = (False, d < 0, a < 0)  # no quarter turn: mirrored and/or turned 180
    elif abs(a) < 0.01 and abs(d) < 0.01 and abs(abs(b) - 1) < 0.01 and abs(abs(c) - 1) < 0.01:
        orient = (True, b < 0, c < 0)  # a quarter turn: x and y swap
    else:
        return None
    return orient if any(orient) else None


def _upright_frame(t: float, frame) -> VideoFrame:
    """The one place a decoded file picture becomes a ``VideoFrame``: upright."""
    return VideoFrame(t, frame, orient=display_orientation(frame))


def _video_time(frame, count: int, fps: float, origin: float) -> float:
    """A decoded video frame's time on the file clock (count / fps when it has none)."""
    return (frame.time if frame.time is not None else count / fps + origin) - origin


def _reason(e: BaseException) -> str:
    """What went wrong, without libav's ``[Errno N] ...: 'function()'`` decoration."""
    return getattr(e, "strerror", None) or one_line(e)


def _open_video(path: Path):
    import av

    if not path.is_file():
        raise SourceError(f"video file not found: {path}")
    try:
        c = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise SourceError(f"cannot read video file {path}: not a media file, or damaged "
                          f"({_reason(e)})") from None
    if not c.streams.video:
        c.close()
        raise SourceError(f"no video stream in {path}")
    return c


def video_times(path: str | Path) -> np.ndarray:
    """(N,) float64 seconds of every frame of a file's video, ascending, on the file
    clock, read from the packets (no decoding). Raises SourceError."""
    import av

    path = Path(path)
    with _open_video(path) as c:
        v = c.streams.video[0]
        origin = file_origin(v, c.streams.audio[0] if c.streams.audio else None)
        # the stream's rate and time base are read while the file is open: after
        # close() they are undefined (garbage times were seen)
        rate, base = float(v.average_rate or 30), v.time_base
        try:
            pts = [p.pts for p in c.demux(v) if p.size]
        except (av.FFmpegError, OSError) as e:
            raise SourceError(f"cannot read video file {path}: damaged ({_reason(e)})") from None
    if any(p is None for p in pts):  # no timestamps: count at the nominal rate
        return np.arange(len(pts)) / rate
    return np.sort(np.array([float(p * base) for p in pts])) - origin


def iter_video_frames(path: str | Path) -> Iterator[VideoFrame]:
    """Every frame of a file's video in presentation order, stamped on the file clock
    exactly as ``FileSource`` stamps them (not converted to RGB). Raises SourceError."""
    import av

    path = Path(path)
    with _open_video(path) as c:
        v = c.streams.video[0]
        origin = file_origin(v, c.streams.audio[0] if c.streams.audio else None)
        fps = float(v.average_rate or 30)
        try:
            for k, frame in enumerate(c.decode(v)):
                yield _upright_frame(_video_time(frame, k, fps, origin), frame)
        except (av.FFmpegError, OSError) as e:
            raise SourceError(f"cannot decode video file {path}: damaged ({_reason(e)})") from None


def decode_audio(path: str | Path, max_s: float | None = None) -> np.ndarray | None:
    """A file's first audio stream → (n,) float32 mono at 16 kHz (at most ``max_s``
    seconds), through the same ``Resampler`` as ``FileSource``; None when the file has
    no audio stream. Raises SourceError for an unreadable file or undecodable audio."""
    import av

    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    limit = None if max_s is None else int(max_s * AUDIO_RATE)
    res, chunks, total = Resampler(), [], 0
    try:
        with av.open(str(path)) as c:
            if not c.streams.audio:
                return None
            for frame in c.decode(c.streams.audio[0]):
                chunks.append(res(frame))
                total += chunks[-1].size
                if limit is not None and total >= limit:
                    break
            else:
                chunks.append(res.flush())
    except (av.FFmpegError, OSError, ValueError) as e:
        raise SourceError(f"{path}: cannot decode audio ({_reason(e)})") from None
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return audio[:limit].astype(np.float32, copy=False)


class FileSource:
    """A video file (video + optional audio) decoded through ``av``."""

    live = False

    def __init__(self, path: str | Path, realtime: bool = False) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.realtime = realtime
        self.live = realtime
        self._c = None
        self.has_video = self.has_audio = False
        self.duration: float | None = None

    def open(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self._c = _open_video(self.path)
        self._v = self._c.streams.video[0]
        self._a = self._c.streams.audio[0] if self._c.streams.audio else None
        self.has_video, self.has_audio = True, self._a is not None
        if self._c.duration:
            self.duration = self._c.duration / 1e6

    def run(self, sink: Sink, stop: threading.Event) -> None:
        if self._c is None:
            raise RuntimeError("FileSource.run before open()")
        import av

        streams = [s for s in (self._v, self._a) if s is not None]
        origin = file_origin(self._v, self._a)  # the file clock's zero
        start_wall = self.clock.now()
        resampler = Resampler()
        audio_t0, audio_n = None, 0  # first audio time, 16 kHz samples emitted
        vfps = float(self._v.average_rate or 30)
        vcount = 0

        def stamp(media_t: float) -> float:
            if not self.realtime:
                return media_t
            wait = start_wall + media_t - self.clock.now()
            if wait > 0:
                stop.wait(wait)
            return start_wall + media_t

        at = 0.0  # media time decoded so far, for the error message
        try:
            for packet in self._c.demux(*streams):
                if stop.is_set():
                    break
                for frame in packet.decode():
                    ft = frame.time
                    if packet.stream.type == "video":
                        at = _video_time(frame, vcount, vfps, origin)
                        sink.video(_upright_frame(stamp(at), frame))
                        vcount += 1
                    else:
                        if audio_t0 is None:
                            audio_t0 = (ft if ft is not None else origin) - origin
                        x = resampler(frame)
                        if len(x):
                            t = audio_t0 + audio_n / AUDIO_RATE
                            audio_n += len(x)
                            sink.audio(AudioChunk(stamp(t), x))
        except av.FFmpegError as e:  # a damaged or truncated file, found mid-way
            raise SourceError(f"{self.path}: cannot decode after {at:.2f} s, the file is damaged "
                              f"({_reason(e)})") from None
        if not stop.is_set() and audio_t0 is not None:
            x = resampler.flush()
            if len(x):
                sink.audio(AudioChunk(stamp(audio_t0 + audio_n / AUDIO_RATE), x))

    def close(self) -> None:
        if self._c is not None:
            self._c.close()
            self._c = None


class PushSource:
    """Frames and audio handed in from outside (e.g. a Gradio page's webcam and
    microphone streams), stamped on arrival. Thread-safe: any thread may push.

    ``push_video(rgb)``: (H, W, 3) uint8 RGB. ``push_audio(samples, rate)``: (n,) or
    (n, ch) int16/float at any rate (a browser gives 48 kHz). ``end()`` finishes the
    stream (the engine then flushes and stops). ``ready`` is set once the engine runs
    the source; a push before that raises (it would have nowhere to go).
    """

    live = True

    def __init__(self, has_video: bool = True, has_audio: bool = True, name: str = "push") -> None:
        self.has_video, self.has_audio, self.name = has_video, has_audio, name
        self._sink: Sink | None = None
        self._lock = threading.Lock()
        self._res = Resampler()
        self._ended = threading.Event()
        self._audio_next: float | None = None
        self.ready = threading.Event()

    def open(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()

    def _need_sink(self) -> Sink:
        if self._sink is None:
            raise RuntimeError("push source is not running: start the engine first")
        return self._sink

    def push_video(self, rgb: np.ndarray, t: float | None = None) -> None:
        sink = self._need_sink()
        with self._lock:
            sink.video(VideoFrame(self.clock.now() if t is None else t, np.asarray(rgb)))

    def push_audio(self, samples: np.ndarray, rate: int, t: float | None = None) -> None:
        sink = self._need_sink()
        n_in = len(np.asarray(samples))
        now = self.clock.now() if t is None else t
        with self._lock:
            x = self._res.from_array(samples, rate)
            if len(x):
                # a chunk arrives after it was recorded: its first sample is that much older
                sink.audio(AudioChunk(now - n_in / rate if t is None else now, x))

    def end(self) -> None:
        self._ended.set()

    def run(self, sink: Sink, stop: threading.Event) -> None:
        self._sink = sink
        self.ready.set()
        while not stop.is_set() and not self._ended.is_set():
            stop.wait(0.05)

    def close(self) -> None:
        self._ended.set()
