"""Omni-Emotion as an analyser of live windows: media in, label + words + explanation out.

`OmniEmotionAnalyser` implements `live.analyser.Analyser` (`__call__(window) -> Result`,
built with `live.analyser.make_result`, the one result shape); it reads the window's
fields by name. The `infer` CLI, the
live engine, the app and the quantization harness all analyse through it.

Streaming cost (issue 12): windows of one session share a `FrameFeatureCache`
(`model.serve.features`), so a frame or face crop is encoded once however many windows
hold it; with a labels-first model (`config.answer_format`) and `explain_every_s`, a
window stops generating once its labels are out unless the label changed or the last
explanation is that old.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers.generation.streamers import TextStreamer

from model.net import tokens
from model.data.templates import REASONING_INSTRUCTIONS
from model.net.processor import Clip
from live.analyser import Result, make_result
from model.serve.features import FrameFeatureCache
from model.serve.generate import ANALYSIS_MAX_NEW_TOKENS, StopAfterLabels, encode, generate

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
        reuse: encode each frame / face crop of a session once (`FrameFeatureCache`);
            exact, so on by default. False runs the encoders on every window's pixels.
        explain_every_s: labels-first models only: a window generates until its labels
            are complete, and goes on to the explanation only when the label differs
            from the last window's or the last explanation is at least this many seconds
            (window clock) old. None: every window explains (the whole answer).

    `stats` counts, since the last `reset`: windows, vision_frames_encoded,
    face_crops_encoded, audio_s_encoded (seconds of audio the Whisper encoder ran on).
    """

    def __init__(self, model, processor, prompt: str = DEFAULT_PROMPT, options: list[str] | None = None,
                 max_new_tokens: int = ANALYSIS_MAX_NEW_TOKENS, name: str | None = None,
                 use_faces: bool = True, use_audio: bool = True, reuse: bool = True,
                 explain_every_s: float | None = None):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if explain_every_s is not None and explain_every_s < 0:
            raise ValueError(f"explain_every_s must be >= 0 or None, got {explain_every_s}")
        self.reuse, self.explain_every_s = reuse, explain_every_s
        self.cache = FrameFeatureCache(model)
        self.reset()
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

    def reset(self) -> None:
        """A new session: forget cached frames, the last label and the counters."""
        self.cache.reset()
        self.session: object = None
        self._last_label: str | None = None
        self._explained_at: float | None = None
        self.stats = {"windows": 0, "vision_frames_encoded": 0, "face_crops_encoded": 0, "audio_s_encoded": 0.0}

    def _use_cache(self, batch: dict, clip: Clip, frame_ids) -> dict:
        """Pixels → cached per-frame features (`visual_embeds`, `face_embeds`)."""
        batch = dict(batch)
        before = (self.cache.vision_frames_encoded, self.cache.face_crops_encoded)
        with torch.inference_mode():
            if "pixel_values_videos" in batch:
                batch["visual_embeds"] = self.cache.visual(frame_ids, batch.pop("pixel_values_videos")[0])
            if "face_pixel_values" in batch:
                present = batch["face_present"][0].cpu().numpy()
                batch["face_embeds"] = self.cache.faces(frame_ids, clip.faces, present, batch.pop("face_pixel_values")[0])
        self.stats["vision_frames_encoded"] += self.cache.vision_frames_encoded - before[0]
        self.stats["face_crops_encoded"] += self.cache.face_crops_encoded - before[1]
        return batch

    def _count(self, batch: dict) -> None:
        """Window and encoder counters for a batch the encoders see whole (no cache)."""
        t = self.model.config.num_frames
        self.stats["vision_frames_encoded"] += t if "pixel_values_videos" in batch else 0
        self.stats["face_crops_encoded"] += t if "face_pixel_values" in batch else 0

    def inputs(self, clip: Clip, frame_ids: list | None = None) -> dict:
        """The model inputs of one clip (a batch of 1 on the model's device), its frames'
        and crops' features taken from the cache where `reuse` and `frame_ids` allow;
        counts the window in `stats`. `model(**inputs(...))` gives the prefill logits."""
        batch = encode(self.model, self.processor, [self.prompt], [clip])
        self.stats["windows"] += 1
        if "input_features" in batch:
            self.stats["audio_s_encoded"] += batch["input_features"].shape[-1] / 100.0  # 10 ms mel hop
        if self.reuse and frame_ids is not None:
            return self._use_cache(batch, clip, frame_ids)
        self._count(batch)
        return batch

    def _wants_explanation(self, at: float | None) -> Callable:
        """The window policy, asked once the labels are parsed (see `explain_every_s`)."""
        def explain(parsed) -> bool:
            due = at is None or self._explained_at is None or at - self._explained_at >= self.explain_every_s
            return parsed.label != self._last_label or due
        return explain

    def analyse(self, clip: Clip, on_text: Callable[[str], None] | None = None,
                frame_ids: list | None = None, at: float | None = None) -> Result:
        """One clip → a `Result` (label, labels, explanation, text, model, pending, error;
        plus tokens, face_frames, audio, seconds).

        on_text: called with the text so far as tokens are generated (streaming UI); the
            page can show the label as soon as `parse_answer` finds it in that text.
        frame_ids: (T,) hashable identities of the clip's frames in their source (a live
            window's (session, frame time)); given with `reuse`, frames and crops already
            encoded are not encoded again.
        at: the clip's time on the session clock, for `explain_every_s`.
        """
        started = time.perf_counter()
        clip = self._modalities(clip)
        batch = self.inputs(clip, frame_ids)
        prompt_len = int(batch["input_ids"].shape[1])
        stop = None
        if self.model.config.answer_format == "labels_first":
            explain = (lambda p: True) if self.explain_every_s is None else self._wants_explanation(at)
            stop = StopAfterLabels(self.processor, prompt_len, explain)
        streamer = _CallbackStreamer(self.processor.tokenizer, on_text) if on_text else None
        answer = generate(self.model, self.processor, batch, self.max_new_tokens, self.options, streamer=streamer,
                          stopping_criteria=stop)[0]
        if stop is not None and 0 in stop.tokens_to_label:
            if stop.explained(0):
                self._explained_at = at
            self._last_label = answer.parsed.label
        result = self._result(clip, answer, prompt_len, started)
        if stop is not None:  # labels first: new tokens until the label list closed (None: never)
            result["tokens"]["to_label"] = stop.tokens_to_label.get(0)
        return result

    def analyse_batch(self, clips: list[Clip]) -> list[Result]:
        """Many clips (e.g. windows of several sessions) in one `generate` call; each
        `Result` equals `analyse(clip)`'s (greedy, left padding; ``seconds`` is the
        batch's time). Used by the serving pool (`model.serve.pool`)."""
        started = time.perf_counter()
        clips = [self._modalities(c) for c in clips]
        batch = encode(self.model, self.processor, [self.prompt] * len(clips), clips)
        answers = generate(self.model, self.processor, batch, self.max_new_tokens, self.options)
        lengths = batch["attention_mask"].sum(dim=1).tolist() if "attention_mask" in batch \
            else [int(batch["input_ids"].shape[1])] * len(clips)
        return [self._result(c, a, int(n), started) for c, a, n in zip(clips, answers, lengths)]

    def _modalities(self, clip: Clip) -> Clip:
        """The clip with the branches this analyser does not use fed as missing."""
        if not self.use_faces:
            clip = replace(clip, face_present=np.zeros_like(clip.face_present))
        if not self.use_audio:
            clip = replace(clip, audio=None, has_audio=False)
        return clip

    def _generated(self, ids) -> int:
        """Tokens generated up to and including the first end token (a batch row's
        padding after it not counted): the same count alone or in a batch."""
        ends = self.model.generation_config.eos_token_id
        ends = set(ends if isinstance(ends, (list, tuple)) else [ends]) - {None}
        for i, t in enumerate(ids.tolist()):
            if t in ends:
                return i + 1
        return int(ids.numel())

    def _result(self, clip: Clip, answer, prompt_tokens: int, started: float) -> Result:
        """The one `Result` of a clip's answer; ``prompt_tokens``: its unpadded prompt length."""
        text, parsed = answer.text, answer.parsed
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
            tokens={**counts, "text": prompt_tokens - sum(counts.values()),
                    "generated": self._generated(answer.ids)},
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
        """One live window; a window of another session (`Window.session`) resets first."""
        session = getattr(window, "session", None)
        if session != self.session:
            self.reset()
            self.session = session
        frame_ids = [(session, float(t)) for t in window.frame_times] if window.has_video else None
        return self.analyse(self.clip_from_window(window), on_text=on_text, frame_ids=frame_ids, at=window.end)
