"""Voice-activity gate: silero-vad, streaming, on exact 512-sample chunks at 16 kHz.

Three stateful callables (``reset()``, ``__call__(...)``, ``flush()``):

* ``Rechunker``: any chunk sizes in → exactly ``CHUNK``-sample pieces out.
* ``SileroOnnxProb``: one 512-sample chunk → speech probability (the model keeps
  its recurrent state between calls). Behind the ``SpeechProb`` protocol so tests or
  other VADs can stand in (the JIT model, for comparison: ``bench/silero_jit.py``).
* ``VADGate``: audio in → finished speech segments ``(start_s, end_s)`` out, with a
  threshold, a hangover (silence needed to end a segment) and a minimum length.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from live.contract.media import AUDIO_RATE

CHUNK = 512  # samples at 16 kHz (32 ms): the only size silero-vad's 16 kHz model takes
THRESHOLD = 0.5  # speech probability that starts a segment
NEG_OFFSET = 0.15  # a segment continues until the probability drops below threshold - this
HANGOVER_S = 0.3  # s of continuous non-speech that ends a segment (bridges word gaps)
MIN_SPEECH_S = 0.12  # s: shorter bursts are dropped (clicks, breaths)
PAD_S = 0.03  # s added before a start (the model reacts about a chunk late to onsets)
# No pad after an end: the model's probability decays a few chunks after speech stops.
KEEP_SEGMENTS = 256  # finished segments kept for window queries (bounded memory)


@dataclass(frozen=True)
class Segment:
    start: float  # s
    end: float  # s

    def to_json(self) -> dict:
        return {"start": round(self.start, 3), "end": round(self.end, 3)}


class Rechunker:
    """Re-cut a stream of arbitrary-size chunks into exactly ``size``-sample pieces,
    with no sample lost, duplicated or reordered."""

    def __init__(self, size: int = CHUNK) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size = size
        self.reset()

    def reset(self) -> None:
        self._pending = np.zeros(0, np.float32)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def __call__(self, samples: np.ndarray) -> list[np.ndarray]:
        x = np.asarray(samples, np.float32).reshape(-1)
        if len(self._pending):
            x = np.concatenate([self._pending, x])
        n = len(x) // self.size * self.size
        self._pending = x[n:].copy()
        return [x[i : i + self.size] for i in range(0, n, self.size)]

    def flush(self) -> list[np.ndarray]:
        """The remainder zero-padded to one full piece (empty list if none)."""
        if not len(self._pending):
            return []
        out = np.zeros(self.size, np.float32)
        out[: len(self._pending)] = self._pending
        self._pending = np.zeros(0, np.float32)
        return [out]


class SpeechProb(Protocol):
    def __call__(self, chunk: np.ndarray) -> float:
        """(CHUNK,) float32 at 16 kHz → probability of speech in [0, 1]."""
        ...

    def reset(self) -> None: ...


ONNX_CONTEXT = 64  # samples of the previous chunk the 16 kHz ONNX model sees before each chunk
ONNX_STATE = (2, 1, 128)  # the ONNX model's recurrent state, float32


def _check_chunk(chunk: np.ndarray) -> None:
    if chunk.shape != (CHUNK,):
        raise ValueError(f"silero-vad needs ({CHUNK},) chunks at 16 kHz, got {chunk.shape}")


def _warm_up(prob, chunks: int) -> None:
    """Run a speech-probability model on ``chunks`` chunks of noise, then reset it."""
    noise = np.random.default_rng(0).normal(0, 0.05, CHUNK).astype(np.float32)
    for _ in range(chunks):
        prob(noise)
    prob.reset()


class SileroOnnxProb:
    """Streaming silero-vad, its ONNX model (``silero_vad/data/silero_vad.onnx``, shipped
    in the same wheel as the JIT one) through onnxruntime on one thread, numpy only:
    the default (docs/benchmarks.md: a fraction of the JIT model's CPU, the same speech
    edges). Feeds the model what silero's own wrapper does: the last ``ONNX_CONTEXT``
    samples of the previous chunk, then the chunk; keeps the state; ``reset()`` clears it."""

    def __init__(self, path: str | None = None) -> None:
        import onnxruntime

        if path is None:
            from importlib.resources import files

            path = str(files("silero_vad") / "data" / "silero_vad.onnx")
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = opts.intra_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(path, sess_options=opts,
                                                    providers=["CPUExecutionProvider"])
        self._x = np.zeros((1, ONNX_CONTEXT + CHUNK), np.float32)  # [context | chunk]
        self._sr = np.array(AUDIO_RATE, np.int64)
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros(ONNX_STATE, np.float32)
        self._x[:] = 0.0

    def warm_up(self, chunks: int = 3) -> None:
        _warm_up(self, chunks)

    def __call__(self, chunk: np.ndarray) -> float:
        _check_chunk(chunk)
        x = self._x
        x[0, :ONNX_CONTEXT] = x[0, -ONNX_CONTEXT:]  # the previous chunk's tail
        x[0, ONNX_CONTEXT:] = chunk
        out, self._state = self.session.run(None, {"input": x, "state": self._state, "sr": self._sr})
        return float(out.reshape(-1)[0])


class VADGate:
    """Audio → speech segments.

    ``__call__(samples, t=None)``: feed (n,) float32 16 kHz; ``t`` = time of the first
    sample, read on the first call after ``reset()`` (later calls are taken as
    contiguous). Returns the segments that finished during this call.
    ``flush()`` ends an open segment at the end of the audio and returns it.
    ``segments_between(t0, t1)`` → finished and ongoing segments overlapping the span,
    clipped to it; ``speech_ratio(t0, t1)`` → fraction of the span that is speech (the
    one computation of a window's speech ratio).
    For a feeder (the engine): ``samples_in`` = samples fed since ``reset()`` (those
    waiting for a full chunk included), ``processed_until`` = time up to which audio
    went through the model.
    """

    def __init__(
        self,
        prob: SpeechProb | None = None,
        threshold: float = THRESHOLD,
        hangover_s: float = HANGOVER_S,
        min_speech_s: float = MIN_SPEECH_S,
        pad_s: float = PAD_S,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if hangover_s < 0 or min_speech_s < 0 or pad_s < 0:
            raise ValueError(
                f"hangover_s, min_speech_s, pad_s must be >= 0, got {hangover_s}, "
                f"{min_speech_s}, {pad_s}"
            )
        self._prob = prob
        self.threshold = threshold
        self.neg_threshold = max(0.01, threshold - NEG_OFFSET)
        self.hangover_s = hangover_s
        self.min_speech_s = min_speech_s
        self.pad_s = pad_s
        self.rechunker = Rechunker(CHUNK)
        self.reset()

    @property
    def prob(self) -> SpeechProb:
        if self._prob is None:
            self._prob = SileroOnnxProb()
        return self._prob

    def reset(self) -> None:
        self.rechunker.reset()
        if self._prob is not None:
            self._prob.reset()
        self.t0: float | None = None
        self._n = 0  # samples through the model
        self._start: float | None = None  # open segment's start
        self._silence_since: float | None = None
        self.segments: deque[Segment] = deque(maxlen=KEEP_SEGMENTS)

    @property
    def samples_in(self) -> int:
        """Samples fed since ``reset()``, including those waiting for a full chunk."""
        return self._n + self.rechunker.pending

    @property
    def processed_until(self) -> float | None:
        """Time up to which audio went through the model."""
        return None if self.t0 is None else self.t0 + self._n / AUDIO_RATE

    @property
    def in_speech(self) -> bool:
        return self._start is not None

    def _close(self, end: float) -> list[Segment]:
        start, self._start, self._silence_since = self._start, None, None
        end = min(end, self.processed_until)
        if end - start < self.min_speech_s:
            return []
        seg = Segment(start, end)
        self.segments.append(seg)
        return [seg]

    def _step(self, chunk: np.ndarray) -> list[Segment]:
        t = self.t0 + self._n / AUDIO_RATE  # start of this chunk
        p = self.prob(chunk)
        self._n += len(chunk)
        if self._start is None:
            if p >= self.threshold:
                self._start = max(self.t0, t - self.pad_s)
                self._silence_since = None
            return []
        if p >= self.neg_threshold:
            self._silence_since = None
            return []
        if self._silence_since is None:
            self._silence_since = t
        if self.processed_until - self._silence_since >= self.hangover_s:
            return self._close(self._silence_since)
        return []

    def __call__(self, samples: np.ndarray, t: float | None = None) -> list[Segment]:
        if self.t0 is None:
            self.t0 = 0.0 if t is None else float(t)
        out: list[Segment] = []
        for chunk in self.rechunker(samples):
            out += self._step(chunk)
        return out

    def flush(self) -> list[Segment]:
        if self.t0 is None:
            return []
        real = self.rechunker.pending
        out: list[Segment] = []
        for chunk in self.rechunker.flush():
            out += self._step(chunk)
            self._n -= CHUNK - real  # the zero padding is not media time
        if self._start is not None:
            end = self._silence_since if self._silence_since is not None else self.processed_until
            out += self._close(end)
        return out

    def segments_between(self, t0: float, t1: float) -> list[tuple[float, float]]:
        spans = [(s.start, s.end) for s in self.segments]
        if self._start is not None:
            spans.append((self._start, self.processed_until))
        return [(max(a, t0), min(b, t1)) for a, b in spans if b > t0 and a < t1]

    def speech_ratio(self, t0: float, t1: float) -> float:
        """Fraction of [t0, t1] covered by speech segments, in [0, 1] (0 for an empty span)."""
        if t1 <= t0:
            return 0.0
        return min(1.0, sum(b - a for a, b in self.segments_between(t0, t1)) / (t1 - t0))
