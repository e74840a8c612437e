"""Audio of any rate, layout and sample format → 16 kHz mono float32 (``av``'s
resampler, libswresample).

``Resampler`` is stateful: consecutive chunks of one stream go through one
libswresample context, so chunk borders leave no clicks and no samples are lost
(the filter's delay is returned by ``flush()``). A change of input rate or channel
count mid-stream starts a new context (a browser may renegotiate its microphone).
"""
from __future__ import annotations

import av
import numpy as np

from live.contract.media import AUDIO_RATE


def _to_float_frames(samples: np.ndarray, channels: int | None = None) -> np.ndarray:
    """(n,) or (n, ch) int16/int32/float → (n, ch) float32 in [-1, 1]."""
    x = np.asarray(samples)
    if x.ndim == 1:
        x = x[:, None]
    elif x.ndim != 2:
        raise ValueError(f"audio must be (n,) or (n, channels), got shape {x.shape}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"expected {channels} channels, got shape {x.shape}")
    if x.dtype == np.int16:
        return x.astype(np.float32) / 32768.0
    if x.dtype == np.int32:
        return x.astype(np.float32) / 2147483648.0
    if x.dtype == np.uint8:
        return (x.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32, copy=False)
    raise ValueError(f"unsupported audio dtype {x.dtype}")


class Resampler:
    """Stateful → 16 kHz mono float32 (n,).

    ``__call__(frame)`` takes an ``av.AudioFrame``; ``from_array(samples, rate)``
    takes (n,) / (n, ch) int16 or float arrays (a microphone callback, a browser chunk).
    """

    def __init__(self, rate: int = AUDIO_RATE) -> None:
        self.rate = rate
        self.reset()

    def reset(self) -> None:
        self._res = None
        self._key = None

    def _resampler(self, key) -> av.AudioResampler:
        if key != self._key:
            self._res = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
            self._key = key
        return self._res

    @staticmethod
    def _collect(frames) -> np.ndarray:
        parts = [f.to_ndarray().reshape(-1) for f in frames]
        return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)

    def __call__(self, frame: av.AudioFrame) -> np.ndarray:
        key = (frame.sample_rate, frame.layout.name, frame.format.name)
        if frame.sample_rate == self.rate and frame.layout.nb_channels == 1 and frame.format.name == "flt":
            return frame.to_ndarray().reshape(-1).astype(np.float32, copy=True)
        frame.pts = None  # let the resampler count samples itself (input pts may jump)
        return self._collect(self._resampler(key).resample(frame))

    def from_array(self, samples: np.ndarray, rate: int) -> np.ndarray:
        if rate <= 0:
            raise ValueError(f"sample rate must be > 0, got {rate}")
        x = _to_float_frames(samples)
        if len(x) == 0:
            return np.zeros(0, np.float32)
        if rate == self.rate and x.shape[1] == 1:
            return x[:, 0].copy()
        ch = x.shape[1]
        layout = {1: "mono", 2: "stereo"}.get(ch)
        if layout is None:  # rare layouts: average channels ourselves, resample as mono
            x, ch, layout = x.mean(axis=1, keepdims=True), 1, "mono"
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(x.reshape(1, -1)), format="flt", layout=layout
        )
        frame.sample_rate = int(rate)
        return self._collect(self._resampler((int(rate), layout, "flt")).resample(frame))

    def flush(self) -> np.ndarray:
        if self._res is None:
            return np.zeros(0, np.float32)
        out = self._collect(self._res.resample(None))
        self.reset()
        return out
