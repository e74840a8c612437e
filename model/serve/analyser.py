"""Omni-Emotion as an analyser of live windows: media in, label + words + explanation out.

`OmniEmotionAnalyser` implements `live.analyser.Analyser` (`__call__(window) -> Result`,
built with `live.analyser.make_result`, the one result shape); it reads the window's
fields by name. The `infer` CLI, the
live engine, the app and the quantization harness all analyse through it.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from transformers.generation.streamers import TextStreamer

from model.net import tokens
from model.data.templates import REASONING_INSTRUCTIONS
from model.net.processor import Clip
from live.analyser import Result, make_result
from model.serve.generate import ANALYSIS_MAX_NEW_TOKENS, encode, generate

if TYPE_CHECKING:
    from model.checkpoint.loading import Loader

DEFAULT_PROMPT = REASONING_INSTRUCTIONS[0]


class _CallbackStreamer(TextStreamer):
    """Calls `on_text(text_so_far)` as tokens arrive (no thread needed)."""

    def __init__(self, tokenizer, on_text: Callable[[str], None]):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.on_text, self.text = on_text, ""

    def on_finalized_text(self, text: str, stream_end: bool = False):
        if text:
            self.text += text
            self.on_text(self.text)


class OmniEmotionAnalyser:
    """Analyse clips or live windows with a loaded model.

    Args:
        model, processor: from `model.checkpoint.loading.load` or `quant.load_model`.
        prompt: the user instruction (default: the paper's multimodal analysis prompt).
        options: if given, the label is matched against these (classification).
        max_new_tokens: generation budget per window.
        name: shown in results and the app (default: the model folder's name).
        use_faces, use_audio: False feeds that branch as a missing modality (zeros) —
            for a model whose face/audio projectors are not trained yet.
    """

    def __init__(self, model, processor, prompt: str = DEFAULT_PROMPT, options: list[str] | None = None,
                 max_new_tokens: int = ANALYSIS_MAX_NEW_TOKENS, name: str | None = None,
                 use_faces: bool = True, use_audio: bool = True):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.model, self.processor = model, processor
        self.use_faces, self.use_audio = use_faces, use_audio
        self.prompt, self.options, self.max_new_tokens = prompt, options, max_new_tokens
        self.name = name or Path(str(getattr(model.config, "_name_or_path", "") or "omni-emotion")).name

    @classmethod
    def load(cls, model_dir: str | Path, plan: str | None = None, device: str = "cpu",
             loader: Loader | None = None, **kwargs) -> "OmniEmotionAnalyser":
        """Load from a checkpoint folder. A precision `plan` needs a `loader` that applies
        it (the composition root passes `quant.load_model`); model/ never imports quant.
        Without a plan the checkpoint loads as saved (`model.checkpoint.loading.load`)."""
        if plan is None:
            from model.checkpoint.loading import load

            model, processor = load(model_dir, device=device)
        elif loader is None:
            raise ValueError(f"plan {plan!r} needs a loader that applies it (quant.load_model)")
        else:
            model, processor = loader(model_dir, plan, device)
        return cls(model, processor, name=kwargs.pop("name", Path(model_dir).name), **kwargs)

    def analyse(self, clip: Clip, on_text: Callable[[str], None] | None = None) -> Result:
        """One clip → a `Result` (label, labels, explanation, text, model, pending, error;
        plus tokens, face_frames, audio, seconds).

        on_text: called with the text so far as tokens are generated (streaming UI).
        """
        started = time.perf_counter()
        if not self.use_faces:
            clip = replace(clip, face_present=np.zeros_like(clip.face_present))
        if not self.use_audio:
            clip = replace(clip, audio=None, has_audio=False)
        batch = encode(self.model, self.processor, [self.prompt], [clip])
        streamer = _CallbackStreamer(self.processor.tokenizer, on_text) if on_text else None
        answer = generate(self.model, self.processor, batch, self.max_new_tokens, self.options, streamer=streamer)[0]
        text, parsed, new = answer.text, answer.parsed, answer.ids
        cfg = self.model.config
        counts = {
            "visual": tokens.visual_token_count(cfg),
            "face": tokens.face_token_count(cfg),
            "audio": tokens.audio_token_count(cfg, clip.audio.size if clip.has_audio else None),
        }
        face_frames = int(np.asarray(clip.face_present).sum()) if clip.has_video else 0
        return make_result(  # the one result shape (live.analyser.Result)
            label=parsed.label, labels=parsed.labels, explanation=parsed.explanation, text=text,
            model=self.name,
            # tokens["text"]: the prompt's own text tokens (chat template + instruction + wrappers).
            tokens={**counts, "text": int(batch["input_ids"].shape[1]) - sum(counts.values()),
                    "generated": int(new.numel())},
            face_frames=face_frames,
            audio="present" if clip.has_audio else "absent",
            seconds=round(time.perf_counter() - started, 4),
        )

    @staticmethod
    def clip_from_window(window) -> Clip:
        """A `live.window.Window` → Clip: the same fields (defined in `Window`)."""
        return Clip(
            frames=window.frames,
            faces=window.faces,
            face_present=np.asarray(window.face_present, dtype=bool),
            audio=window.audio.astype(np.float32, copy=False),
            has_video=bool(window.has_video),
            has_audio=bool(window.has_audio) and window.audio.size > 0,
        )

    def __call__(self, window, on_text: Callable[[str], None] | None = None) -> Result:
        return self.analyse(self.clip_from_window(window), on_text=on_text)
