"""Sliding analysis windows: every hop, the last ``window_s`` seconds as a ``Window``.

``Window`` is the contract between ``live/`` and any analyser (the model adapts to
it). ``WindowAssembler`` builds them from the buffers; ``Gate`` decides which go to
the analyser. ``file_window`` gives a file span the same frames and face crops a live
window over that span gets (training preprocessing uses it), because both sample with
``live.contract.media.sample_frames`` and pick the face with ``live.faces.window_faces``.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from live.buffers import AudioBuffer, FrameBuffer
from live.faces import FaceTracker, face_crops, window_face_boxes, window_faces
from live.frames import VideoFrame
from live.contract.media import (AUDIO_RATE, CROP_SIZE, HOP_S, N_FRAMES, WINDOW_S, Clip, check_window, no_audio, no_frames,
                    sample_frames)
from live.sources import SourceError, iter_video_frames, video_times
from live.vad import VADGate

GATES = ("always", "face", "speech")


@dataclass(kw_only=True)
class Window(Clip):
    """One analysis window, ``T = N_FRAMES`` (8): a ``live.contract.media.Clip`` (the media, given
    to the processor as it is) with its times and ids.

    This docstring is where the media fields are defined; the preprocessing cache
    (``model.data.preprocess``) carries the same fields under the same names. A missing modality has one form everywhere: arrays of the documented
    shape filled with zeros (``live.contract.media.no_frames`` / ``no_faces`` / ``no_audio``),
    plus ``has_video`` / ``has_audio`` / ``face_present``.

    start, end:    seconds on the stream clock; ``end - start == window_s`` except
                   for a single short window at the end of a clip shorter than that.
    index:         0, 1, 2, ... in emission order.
    frames:        (T, H, W, 3) uint8 RGB as stored (``live.contract.media.ingest_size``: the
                   source size, or scaled so the long side is 640 px), chosen by
                   ``live.contract.media.sample_frames`` (frame ``i`` is the one nearest to
                   ``start + (i + 0.5) * (end - start) / T``); (0, 0, 0, 3) when
                   ``has_video`` is False.
    frame_times:   (T,) float64 seconds, the actual times of those frames
                   (NaN where there is no video).
    faces:         (T, 224, 224, 3) uint8 RGB square crops of the window's face
                   (``live.faces.window_faces``), zeros where ``face_present`` is False.
    face_present:  (T,) bool, True where frame i has a crop of the window's face.
    face_boxes:    (T, 4) float32 [x0, y0, x1, y1] pixels of the crops' boxes in the
                   stored frames (the pixels of ``frames``), NaN if absent.
    face_track:    tracker id of the window's face, or None.
    audio:         (round((end - start) * 16000),) float32 mono at 16 kHz; zeros
                   where there was no audio, all zeros when ``has_audio`` is False.
    has_video:     the source has a video stream.
    has_audio:     the source has an audio stream.
    speech:        [(start_s, end_s), ...] speech segments clipped to the window
                   (an ongoing one ends at ``end``).
    speech_ratio:  fraction of the window that is speech, in [0, 1].

    ``frames`` and ``faces`` read as these arrays; a window from ``WindowAssembler``
    computes them on first read (see ``_lazy``), everything else at assembly.
    """

    index: int
    start: float
    end: float
    frames: np.ndarray
    frame_times: np.ndarray
    faces: np.ndarray
    face_present: np.ndarray
    face_boxes: np.ndarray
    face_track: int | None
    audio: np.ndarray
    speech: list[tuple[float, float]]
    speech_ratio: float
    has_audio: bool = True
    has_video: bool = True
    audio_rate: int = AUDIO_RATE
    created: float = field(default=0.0, repr=False)  # perf_counter() at assembly
    # Which stream (WindowAssembler run) the window belongs to: with frame_times, the
    # identity of its frames (model.serve.features caches encoder outputs by it).
    stream_id: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        """Built whole (``WindowAssembler.build``): nothing to fill, and ``frames`` and
        ``faces`` may be lazy, so they are not read here."""

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for name in LAZY_FIELDS:  # the arrays, never the live frames
            state["_" + name] = getattr(self, name)
        return state

    def summary(self) -> dict:
        """The JSON-able part logged to windows.jsonl (no pixels or samples)."""
        return {
            "index": self.index,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "frame_times": [None if np.isnan(t) else round(float(t), 3) for t in self.frame_times],
            "face_track": self.face_track,
            "speech_ratio": round(float(self.speech_ratio), 3),
        }


def _lazy(name: str) -> property:
    """A ``Window`` field that may be given as a zero-argument callable (a
    ``functools.partial``): it is called on the first read, on the reader's thread,
    and its array kept. ``WindowAssembler.build`` gives ``frames`` and ``faces`` this
    way, so building a window copies no pictures and makes no crops: a window that is
    gated, dropped for a newer one, or analysed from a per-frame cache costs neither."""
    key = "_" + name

    def get(w: Window) -> np.ndarray:
        v = w.__dict__[key]
        if callable(v):
            v = w.__dict__[key] = v()
        return v

    def put(w: Window, v) -> None:  # the dataclass's __init__ goes through here
        w.__dict__[key] = v

    return property(get, put, doc=f"see Window ({name}); computed on first read")


LAZY_FIELDS = ("frames", "faces")
for _name in LAZY_FIELDS:
    setattr(Window, _name, _lazy(_name))


def stack_rgb(frames) -> np.ndarray:
    """(T, H, W, 3) uint8: the frames' RGB (each converted once, ``VideoFrame.rgb``)."""
    return np.stack([f.rgb() for f in frames])


class Gate:
    """Which windows go to the analyser: ``always``, ``face`` (a face in at least one
    frame) or ``speech`` (any speech in the window)."""

    def __init__(self, policy: str = "always") -> None:
        if policy not in GATES:
            raise ValueError(f"gate policy must be one of {GATES}, got {policy!r}")
        self.policy = policy

    def __call__(self, w: Window) -> bool:
        if self.policy == "face":
            return bool(w.face_present.any())
        if self.policy == "speech":
            return w.speech_ratio > 0.0
        return True


class WindowAssembler:
    """Stateful: ``due(video_until, audio_until)`` → the window end times that are
    complete; ``build(end)`` → the ``Window`` ending there. ``t_first`` (the first
    media time) anchors the grid: window ends are ``t_first + window_s + k * hop_s``.
    """

    def __init__(self, hop_s: float = HOP_S, window_s: float = WINDOW_S, n_frames: int = N_FRAMES,
                 crop_size: int = CROP_SIZE) -> None:
        check_window(window_s, hop_s)
        if n_frames < 1:
            raise ValueError(f"need n_frames >= 1, got {n_frames}")
        self.hop_s, self.window_s, self.n_frames, self.crop_size = hop_s, window_s, n_frames, crop_size
        self.reset()

    def reset(self) -> None:
        self.stream_id = uuid.uuid4().hex  # a new stream: new frame identities
        self.t_first: float | None = None
        self._k = 0  # index of the next window
        self.emitted = 0

    def anchor(self, t: float) -> None:
        if self.t_first is None:
            self.t_first = float(t)

    def next_end(self) -> float | None:
        if self.t_first is None:
            return None
        # computed from the index, not accumulated, so there is no float drift
        return self.t_first + self.window_s + self._k * self.hop_s

    def due(self, ready_until: float) -> list[float]:
        """Window ends <= ``ready_until`` not yet handed out (marks them handed out)."""
        out = []
        while self.t_first is not None and self.next_end() <= ready_until + 1e-9:
            out.append(self.next_end())
            self._k += 1
        return out

    def tail(self, media_end: float) -> list[float]:
        """At end of stream: if no window was ever due (a clip shorter than one
        window), one window ending at ``media_end``."""
        if self.t_first is None or self._k > 0 or media_end <= self.t_first:
            return []
        self._k += 1
        return [media_end]

    def build(self, end: float, frames: FrameBuffer, audio: AudioBuffer | None,
              vad: VADGate | None, has_video: bool = True, has_audio: bool = True,
              created: float = 0.0) -> Window:
        """The window ending at ``end``; it starts ``window_s`` earlier, or at
        ``t_first`` for the one short tail window of a short clip."""
        start = end - self.window_s
        if self.t_first is not None and start < self.t_first - 1e-9:
            start = self.t_first
        T, S = self.n_frames, self.crop_size
        picked = frames.sample(start, end, T) if has_video else [None] * T
        if has_video and picked[0] is not None:
            # stacked on first read (see ``_lazy``): no copy for a window nobody reads
            imgs = partial(stack_rgb, tuple(picked))
            times = np.array([f.t for f in picked])
        else:
            imgs, times = no_frames(), np.full(T, np.nan)
        # ``window_faces`` in two steps: which face and where now (the gate and the
        # record need them), its crops on first read of ``faces``
        present, boxes, track = window_face_boxes(picked)
        faces = partial(face_crops, tuple(picked), present, boxes, track, S)
        n = int(round((end - start) * AUDIO_RATE))
        wav = audio.between(start, start + n / AUDIO_RATE) if (audio is not None and has_audio) else no_audio(n)
        speech = vad.segments_between(start, end) if vad is not None else []
        ratio = vad.speech_ratio(start, end) if vad is not None else 0.0
        w = Window(
            index=self.emitted, start=start, end=end, frames=imgs, frame_times=times, faces=faces,
            face_present=present, face_boxes=boxes, face_track=track, audio=wav, speech=speech,
            speech_ratio=float(ratio), has_audio=has_audio, has_video=has_video, created=created,
            stream_id=self.stream_id,
        )
        self.emitted += 1
        return w


def _pick(path: Path, times: np.ndarray, start: float, end: float, n: int,
          tracker: FaceTracker | None) -> list[VideoFrame] | None:
    """Decode until the last sampled frame is settled, tracking every frame as the
    live engine does (held frames settle at the next detection, or at the end of the
    file); None when fewer frames decode than ``times`` promised."""
    idx = sample_frames(times, start, end, n)
    wanted, last = set(idx.tolist()), int(idx.max())
    kept: dict[int, VideoFrame] = {}
    settled = 0

    def take(frames: list[VideoFrame]) -> None:
        nonlocal settled
        for f in frames:
            if settled in wanted:
                kept[settled] = f
            settled += 1

    if tracker is not None:
        tracker.reset()
    for frame in iter_video_frames(path):
        take([frame] if tracker is None else tracker.push(frame))
        if settled > last:
            break
    else:
        if tracker is not None:
            take(tracker.flush())
    return [kept[i] for i in idx.tolist()] if len(kept) == len(wanted) else None


def file_window(path: str | Path, start: float | None = None, end: float | None = None,
                n: int = N_FRAMES, tracker: FaceTracker | None = None,
                crop_size: int = CROP_SIZE) -> Window:
    """The ``n`` frames of a file's span [start, end] and the crops of its face, exactly
    as a live window over that span gets them, as a ``Window`` without sound
    (``frames`` stacked on first read; ``has_audio`` False, no speech): the same sampling rule over all of the
    file's frames, every frame up to the last sampled one tracked by ``tracker`` (a
    fresh ``FaceTracker`` with the live defaults; None: no faces) and the same
    primary-face rule.

    Default span: the whole video, first frame to one frame period after the last.
    Raises SourceError for an unreadable file or one without video frames.
    """
    path = Path(path)
    times = video_times(path)
    for attempt in range(2):
        if times.size == 0:
            raise SourceError(f"{path}: video stream has no frames")
        period = float(np.median(np.diff(times))) if times.size > 1 else 0.0
        s = float(times[0]) if start is None else float(start)
        e = float(times[-1]) + period if end is None else float(end)
        if e < s:
            raise ValueError(f"span end {e} is before its start {s}")
        picked = _pick(path, times, s, e, n, tracker)
        if picked is not None:
            break
        # fewer frames decode than the packets promised: sample what really decodes
        times = np.array([f.t for f in iter_video_frames(path)])
    else:
        raise SourceError(f"{path}: frames do not decode consistently")
    faces, present, boxes, track = window_faces(picked if tracker is not None else [None] * n, crop_size)
    return Window(index=0, start=s, end=e, frames=partial(stack_rgb, tuple(picked)),
                  frame_times=np.array([f.t for f in picked]), faces=faces, face_present=present, face_boxes=boxes,
                  face_track=track, audio=no_audio(), has_audio=False, speech=[], speech_ratio=0.0)
