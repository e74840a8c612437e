"""silero-vad's JIT (TorchScript) model behind ``live.vad.SpeechProb``: the reference the
product's ONNX model (``live.vad.SileroOnnxProb``) is measured and tested against
(``bench/live.py``, ``tests/test_live_vad.py``); the front end never loads it.
"""
from __future__ import annotations

import numpy as np

from live.contract.media import AUDIO_RATE
from live.vad import _check_chunk, _warm_up


def load_silero():
    """silero-vad's JIT model. Importing silero_vad calls ``torch.set_num_threads(1)``
    for the whole process; put the caller's setting back."""
    import torch

    threads = torch.get_num_threads()
    try:
        from silero_vad import load_silero_vad
    finally:
        torch.set_num_threads(threads)
    return load_silero_vad()


class SileroSpeechProb:
    """Streaming silero-vad, the JIT (TorchScript) model: keeps the model's state across
    calls; ``reset()`` clears it. The reference the default (``live.vad.SileroOnnxProb``)
    is compared with (``bench/live.py``, ``tests/test_live_vad.py``)."""

    def __init__(self, model=None) -> None:
        import torch

        self._torch = torch
        self.model = model if model is not None else load_silero()
        self.reset()

    def reset(self) -> None:
        self.model.reset_states()

    def warm_up(self, chunks: int = 40) -> None:
        """Run the TorchScript model a few times, so its profiling passes happen now
        rather than in the first second of a session; then reset."""
        _warm_up(self, chunks)

    def __call__(self, chunk: np.ndarray) -> float:
        _check_chunk(chunk)
        torch = self._torch
        # One intra-op thread for this call only: a 512-sample chunk is too small to
        # share, and idle OpenMP workers spin afterwards (twice the CPU for nothing).
        # The setting is per calling thread, and the caller's is put back.
        threads = torch.get_num_threads()
        if threads != 1:
            torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                return float(self.model(torch.from_numpy(chunk), AUDIO_RATE).item())
        finally:
            if threads != 1:
                torch.set_num_threads(threads)
