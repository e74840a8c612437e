"""Omni-Emotion as an analyser of live windows: media in, label + words + explanation out.

`OmniEmotionAnalyser` implements `live.analyser.Analyser` (`__call__(window) -> dict`)
without importing `live/`: it reads the window's fields by name. The `infer` CLI, the
live engine, the app and the quantization harness all analyse through it.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from transformers.generation.streamers import TextStreamer

from model.net import tokens
from model.data.answers import parse_answer
from model.data.templates import REASONING_INSTRUCTIONS
from model.net.processor import Clip

DEFAULT_PROMPT = REASONING_INSTRUCTIONS[0]
MAX_NEW_TOKENS = 96  # a label, a few words and two or three sentences

# loader(path, device) -> (model, processor); quant.load_model fits with a plan bound.
Loader = Callable[..., tuple]


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
                 max_new_tokens: int = MAX_NEW_TOKENS, name: str | None = None,
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
        it (the composition root passes `quant.load_model`); model/ never imports quant."""
        if loader is None:
            if plan is not None:
                raise ValueError(f"plan {plan!r} needs a loader that applies it (quant.load_model)")
            from model.checkpoint.loading import load

            model, processor = load(model_dir, device=device)
        else:
            model, processor = loader(model_dir, plan, device) if plan is not None else loader(model_dir, device=device)
        return cls(model, processor, name=kwargs.pop("name", Path(model_dir).name), **kwargs)

    def analyse(self, clip: Clip, on_text: Callable[[str], None] | None = None) -> dict:
        """One clip → {"label", "labels", "explanation", "text", "tokens", "seconds"}.

        on_text: called with the text so far as tokens are generated (streaming UI).
        """
        started = time.perf_counter()
        if not self.use_faces:
            clip = Clip(frames=clip.frames, audio=clip.audio)
        if not self.use_audio:
            clip = Clip(frames=clip.frames, faces=clip.faces, face_mask=clip.face_mask)
        batch = self.processor([{"role": "user", "content": self.prompt}], clip)
        device = next(p for p in self.model.parameters() if p.device.type != "meta").device
        batch = {k: v.to(device) for k, v in batch.items()}
        streamer = _CallbackStreamer(self.processor.tokenizer, on_text) if on_text else None
        with torch.inference_mode():
            out = self.model.generate(
                **batch, max_new_tokens=self.max_new_tokens, do_sample=False, streamer=streamer,
                pad_token_id=self.processor.tokenizer.pad_token_id,
            )
        new = out[0, batch["input_ids"].shape[1]:]
        text = self.processor.decode(new).strip()
        parsed = parse_answer(text, self.options)
        cfg = self.model.config
        counts = {
            "visual": tokens.visual_token_count(cfg),
            "face": tokens.face_token_count(cfg),
            "audio": tokens.audio_token_count(cfg, clip.audio.size if clip.audio is not None else None),
        }
        if clip.faces is None:
            face_frames = 0
        else:
            face_frames = len(clip.faces) if clip.face_mask is None else int(np.asarray(clip.face_mask).sum())
        return {
            "label": parsed.label,
            "labels": parsed.labels,
            "explanation": parsed.explanation,
            "text": text,
            # "text": the prompt's own text tokens (chat template + instruction + wrappers).
            "tokens": {**counts, "text": int(batch["input_ids"].shape[1]) - sum(counts.values()),
                       "generated": int(new.numel())},
            "face_frames": face_frames,
            "audio": "present" if clip.audio is not None else "absent",
            "seconds": round(time.perf_counter() - started, 4),
            "model": self.name,
        }

    @staticmethod
    def clip_from_window(window) -> Clip:
        """A `live.window.Window` → Clip (absent modalities as None)."""
        present = np.asarray(window.face_present, dtype=bool)
        has_audio = bool(getattr(window, "has_audio", True)) and window.audio is not None and window.audio.size > 0
        return Clip(
            frames=window.frames,
            faces=window.faces if present.any() else None,
            face_mask=present if present.any() else None,
            audio=window.audio.astype(np.float32, copy=False) if has_audio else None,
        )

    def __call__(self, window, on_text: Callable[[str], None] | None = None) -> dict:
        return self.analyse(self.clip_from_window(window), on_text=on_text)
