"""Sliding analysis windows: every hop, the last ``window_s`` seconds as a ``Window``.

``Window`` is the contract between ``live/`` and any analyser (the model adapts to
it). ``WindowAssembler`` builds them from the buffers; ``Gate`` decides which go to
the analyser.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .buffers import AudioBuffer, FrameBuffer
from .faces import CROP_SIZE, crop_face
from .frames import AUDIO_RATE
from .vad import VADGate

HOP_S = 1.0  # s between window ends
WINDOW_S = 4.0  # s covered by one window
N_FRAMES = 8  # frames sampled uniformly per window (the model's 8 frame positions)
GATES = ("always", "face", "speech")
MIN_SPEECH_RATIO = 0.0  # "speech" gate: the ratio must exceed this


@dataclass
class Window:
    """One analysis window, ``T = N_FRAMES`` (8).

    start, end:    seconds on the session clock; ``end - start == window_s`` except
                   for a single short window at the end of a clip shorter than that.
    index:         0, 1, 2, ... in emission order.
    frames:        (T, H, W, 3) uint8 RGB, sampled uniformly: frame ``i`` is the one
                   nearest to ``start + (i + 0.5) * (end - start) / T``;
                   None when the source has no video.
    frame_times:   (T,) float64 seconds, the actual times of those frames
                   (NaN where there is no video).
    faces:         (T, 224, 224, 3) uint8 RGB square crops of the window's face,
                   zeros where absent (see ``face_present``).
    face_present:  (T,) bool.
    face_boxes:    (T, 4) float32 [x0, y0, x1, y1] pixels of the crops' boxes, NaN if absent.
    face_track:    tracker id of the window's face (the track present in most of the
                   T frames), or None.
    audio:         (round((end - start) * 16000),) float32 mono at 16 kHz; zeros
                   where there was no audio (``has_audio`` tells if the source has any).
    speech:        [(start_s, end_s), ...] speech segments clipped to the window
                   (an ongoing one ends at ``end``).
    speech_ratio:  fraction of the window that is speech, in [0, 1].
    """

    index: int
    start: float
    end: float
    frames: np.ndarray | None
    frame_times: np.ndarray
    faces: np.ndarray
    face_present: np.ndarray
    face_boxes: np.ndarray
    face_track: int | None
    audio: np.ndarray
    speech: list[tuple[float, float]]
    speech_ratio: float
    has_audio: bool = True
    audio_rate: int = AUDIO_RATE
    created: float = field(default=0.0, repr=False)  # perf_counter() at assembly

    def face_list(self) -> list[np.ndarray | None]:
        """Per frame: the (224, 224, 3) crop, or None where no face."""
        return [f if p else None for f, p in zip(self.faces, self.face_present)]

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


class Gate:
    """Which windows go to the analyser: ``always``, ``face`` (a face in at least one
    frame) or ``speech`` (speech ratio above ``min_speech_ratio``)."""

    def __init__(self, policy: str = "always", min_speech_ratio: float = MIN_SPEECH_RATIO) -> None:
        if policy not in GATES:
            raise ValueError(f"gate policy must be one of {GATES}, got {policy!r}")
        self.policy = policy
        self.min_speech_ratio = min_speech_ratio

    def __call__(self, w: Window) -> bool:
        if self.policy == "face":
            return bool(w.face_present.any())
        if self.policy == "speech":
            return w.speech_ratio > self.min_speech_ratio
        return True


def sample_targets(start: float, end: float, n: int = N_FRAMES) -> np.ndarray:
    """(n,) uniform sample times: the centres of n equal slices of [start, end]."""
    return start + (np.arange(n) + 0.5) * (end - start) / n


class WindowAssembler:
    """Stateful: ``due(video_until, audio_until)`` → the window end times that are
    complete; ``build(end)`` → the ``Window`` ending there. ``t_first`` (the first
    media time) anchors the grid: window ends are ``t_first + window_s + k * hop_s``.
    """

    def __init__(self, hop_s: float = HOP_S, window_s: float = WINDOW_S, n_frames: int = N_FRAMES,
                 crop_size: int = CROP_SIZE) -> None:
        if hop_s <= 0 or window_s <= 0 or n_frames < 1:
            raise ValueError(
                f"need hop_s > 0, window_s > 0, n_frames >= 1; got {hop_s}, {window_s}, {n_frames}"
            )
        self.hop_s, self.window_s, self.n_frames, self.crop_size = hop_s, window_s, n_frames, crop_size
        self.reset()

    def reset(self) -> None:
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
        targets = sample_targets(start, end, T)
        picked = frames.nearest(targets) if has_video else [None] * T
        faces = np.zeros((T, S, S, 3), np.uint8)
        present = np.zeros(T, bool)
        boxes = np.full((T, 4), np.nan, np.float32)
        times = np.array([np.nan if f is None else f.t for f in picked])
        track = None
        imgs = None
        if has_video and picked[0] is not None:
            imgs = np.stack([f.rgb() for f in picked])
            votes: dict[int, int] = {}
            for f in picked:
                for tf in f.faces or ():
                    votes[tf.track] = votes.get(tf.track, 0) + 1
            if votes:
                last_primary = next((f.primary for f in reversed(picked) if f.primary is not None), None)
                track = max(votes, key=lambda k: (votes[k], k == last_primary))
                for i, f in enumerate(picked):
                    box = next((tf.box for tf in f.faces or () if tf.track == track), None)
                    if box is not None:
                        crop = f.crops.get((track, S))
                        if crop is None:
                            crop = f.crops[(track, S)] = crop_face(imgs[i], box, size=S)
                        faces[i] = crop
                        present[i] = True
                        boxes[i] = box
        n = int(round((end - start) * AUDIO_RATE))
        wav = audio.between(start, start + n / AUDIO_RATE) if (audio is not None and has_audio) else np.zeros(n, np.float32)
        speech = vad.segments_between(start, end) if vad is not None else []
        ratio = sum(b - a for a, b in speech) / (end - start) if end > start else 0.0
        w = Window(
            index=self.emitted, start=start, end=end, frames=imgs, frame_times=times, faces=faces,
            face_present=present, face_boxes=boxes, face_track=track, audio=wav, speech=speech,
            speech_ratio=float(min(1.0, ratio)), has_audio=has_audio, created=created,
        )
        self.emitted += 1
        return w
