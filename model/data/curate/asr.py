"""Stage 3's local speech recognition: Whisper through ``transformers`` (transcript +
detected language).

The pipeline sees only the ``Transcriber`` protocol, so any ASR (or a test double)
fits; ``WhisperASR`` is the real one (``--asr openai/whisper-large-v3`` or a folder).
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from live.contract.media import AUDIO_RATE

ASR_MAX_S = 30.0  # s: Whisper's window; longer clips are transcribed from their first 30 s
ASR_MAX_NEW_TOKENS = 200  # tokens per transcript (30 s of fast speech is ~150)
PROMPT_TOKENS = 4  # decoder prompt: <|startoftranscript|> <|lang|> <|transcribe|> <|notimestamps|>


class Transcriber(Protocol):
    def __call__(self, audio: np.ndarray) -> tuple[str, str | None]:
        """(n,) float32 mono 16 kHz → (transcript, language code or None)."""
        ...


class WhisperASR:
    """A Whisper checkpoint (hub id or folder) on ``device``. Not thread-safe: the
    pipeline calls it under its local-work lock."""

    def __init__(self, name: str, device: str = "cpu", max_new_tokens: int = ASR_MAX_NEW_TOKENS):
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        self.processor = WhisperProcessor.from_pretrained(name)
        self.model = WhisperForConditionalGeneration.from_pretrained(name).to(device).eval()
        self.device = device
        # the decoder's positions hold the prompt (start, language, task, no-timestamps) too
        self.max_length = min(PROMPT_TOKENS + max_new_tokens, self.model.config.max_target_positions)
        gc = self.model.generation_config
        self.multilingual = bool(getattr(gc, "is_multilingual", False) and getattr(gc, "lang_to_id", None))

    def __call__(self, audio: np.ndarray) -> tuple[str, str | None]:
        import torch

        audio = np.asarray(audio, np.float32)[: int(ASR_MAX_S * AUDIO_RATE)]
        feats = self.processor(audio, sampling_rate=AUDIO_RATE, return_tensors="pt").input_features
        feats = feats.to(self.device, self.model.dtype)
        with torch.inference_mode():
            language = None
            if self.multilingual:
                lang_id = self.model.detect_language(feats)
                token = self.processor.tokenizer.convert_ids_to_tokens(int(lang_id[0]))
                language = token.strip("<|>") if isinstance(token, str) else None
                out = self.model.generate(feats, task="transcribe", language=token,
                                          max_length=self.max_length)
            else:
                out = self.model.generate(feats, max_length=self.max_length)
        text = self.processor.batch_decode(out, skip_special_tokens=True)[0]
        return " ".join(text.split()), language
