"""Omni-Emotion as an analyser of live windows: media in, label + words + explanation out.

`OmniEmotionAnalyser` implements `live.worker.Analyser` (`__call__(window) -> Result`,
built with `live.contract.result.make_result`, the one result shape); it reads the window's
fields by name. The `infer` CLI, the
live engine, the app and the quantization harness all analyse through it.

Streaming cost (issue 12): windows of one session share a `FrameFeatureCache`
(`model.serve.features`), so a frame or face crop is encoded once however many windows
hold it; with a labels-first model (`config.answer_format`) and `explain_every_s`, a
window stops generating once its labels are out unless the label changed or the last
explanation is that old.

That per-session memory is a `Session` (cache, last label, last explanation time,
counters). The analyser keeps one for its own use (`__call__` starts a new one when the
window's session changes); `analyse_batch` takes one per clip, so a pool replica
(`model.serve.pool`) batches windows of several sessions, each through its own cache.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from transformers.generation.streamers import TextStreamer

from model.net import tokens
from model.net.templates import REASONING_INSTRUCTIONS
from live.contract.media import Clip
from live.contract.result import Result, make_result
from model.serve.features import CACHE_FRAMES, FrameFeatureCache
from model.serve.generate import ANALYSIS_MAX_NEW_TOKENS, StopAfterLabels, encode, generate

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


class Session:
    """One session's memory in an analyser.

    cache: its `FrameFeatureCache` (bounded: `capacity` frames per branch).
    last_label, explained_at: the label-first policy's memory (`explain_every_s`).
    stats: windows, vision_frames_encoded, face_crops_encoded, audio_s_encoded (seconds
        of audio the Whisper encoder ran on).
    used_at: `time.monotonic()` of its last window (a pool drops idle sessions' caches).
    """

    def __init__(self, model, id: object = None, capacity: int = CACHE_FRAMES):
        self.id = id
        self.cache = FrameFeatureCache(model, capacity)
        self.last_label: str | None = None
        self.explained_at: float | None = None
        self.stats = {"windows": 0, "vision_frames_encoded": 0, "face_crops_encoded": 0, "audio_s_encoded": 0.0}
        self.used_at = time.monotonic()


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

    `current` is the analyser's own `Session` (`cache`, `stats`, `session` read it):
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
        self.model, self.processor = model, processor
        self.reset()
        self.use_faces, self.use_audio = use_faces, use_audio
        self.prompt, self.options, self.max_new_tokens = prompt, options, max_new_tokens
        self.name = name or Path(str(getattr(model.config, "_name_or_path", "") or "omni-emotion")).name

    def reset(self) -> None:
        """A new session: forget cached frames, the last label and the counters."""
        self.current = self.new_session()

    def new_session(self, id: object = None) -> Session:
        """A fresh `Session` for this analyser's model."""
        return Session(self.model, id)

    @property
    def session(self) -> object:
        return self.current.id

    @property
    def cache(self) -> FrameFeatureCache:
        return self.current.cache

    @property
    def stats(self) -> dict:
        return self.current.stats

    def _features(self, batch: dict, clips: list[Clip], frame_ids: list, sessions: list[Session]) -> dict:
        """Counts each row's window in its session's `stats`; where `reuse` and the row's
        frame ids allow, replaces the pixels by per-frame features from the row's session
        cache (`visual_embeds` (B, T, v, H), `face_embeds` (B, T, f, H)). Rows without
        frame ids in such a batch are encoded whole, on their own."""
        t = self.model.config.num_frames
        for clip, s in zip(clips, sessions):
            s.stats["windows"] += 1
            s.used_at = time.monotonic()
            if "input_features" in batch and clip.has_audio:
                s.stats["audio_s_encoded"] += batch["input_features"].shape[-1] / 100.0  # 10 ms mel hop
        use = [self.reuse and ids is not None for ids in frame_ids]
        if not any(use):  # the encoders see the pixels whole, inside the model
            for s in sessions:
                s.stats["vision_frames_encoded"] += t if "pixel_values_videos" in batch else 0
                s.stats["face_crops_encoded"] += t if "face_pixel_values" in batch else 0
            return batch
        batch, inner = dict(batch), self.model.model
        with torch.inference_mode():
            if "pixel_values_videos" in batch:
                pixels, rows = batch.pop("pixel_values_videos"), []
                for i, s in enumerate(sessions):
                    before = s.cache.vision_frames_encoded
                    rows.append(s.cache.visual(frame_ids[i], pixels[i]) if use[i] else inner.visual_features(pixels[i][None]))
                    s.stats["vision_frames_encoded"] += s.cache.vision_frames_encoded - before if use[i] else t
                batch["visual_embeds"] = torch.cat(rows)
            if "face_pixel_values" in batch:
                pixels, rows = batch.pop("face_pixel_values"), []
                for i, s in enumerate(sessions):
                    before = s.cache.face_crops_encoded
                    # the clip's own (T,) bool: what the processor stacked into the batch
                    rows.append(s.cache.faces(frame_ids[i], clips[i].faces, clips[i].face_present, pixels[i]) if use[i]
                                else inner.face_features(pixels[i][None]))
                    s.stats["face_crops_encoded"] += s.cache.face_crops_encoded - before if use[i] else t
                batch["face_embeds"] = torch.cat(rows)
        return batch

    def inputs(self, clip: Clip, frame_ids: list | None = None, session: Session | None = None) -> dict:
        """The model inputs of one clip (a batch of 1 on the model's device), its frames'
        and crops' features taken from the session's cache (default: `current`) where
        `reuse` and `frame_ids` allow; counts the window in the session's `stats`.
        `model(**inputs(...))` gives the prefill logits."""
        return self.batch_inputs([clip], [frame_ids], [session or self.current])

    def batch_inputs(self, clips: list[Clip], frame_ids: list, sessions: list[Session]) -> dict:
        """`inputs` for many clips (left-padded), each through its own session's cache."""
        clips = [self._modalities(c) for c in clips]
        batch = encode(self.model, self.processor, [self.prompt] * len(clips), clips)
        return self._features(batch, clips, frame_ids, sessions)

    def _wants_explanation(self, session: Session, at: float | None) -> Callable:
        """The window policy, asked once the labels are parsed (see `explain_every_s`)."""
        if self.explain_every_s is None:
            return lambda parsed: True

        def explain(parsed) -> bool:
            due = at is None or session.explained_at is None or at - session.explained_at >= self.explain_every_s
            return parsed.label != session.last_label or due
        return explain

    def analyse(self, clip: Clip, on_text: Callable[[str], None] | None = None,
                frame_ids: list | None = None, at: float | None = None, session: Session | None = None) -> Result:
        """One clip → a `Result` (label, labels, explanation, text, model, pending, error;
        plus tokens, face_frames, audio, seconds).

        on_text: called with the text so far as tokens are generated (streaming UI); the
            page can show the label as soon as `parse_answer` finds it in that text.
        frame_ids: (T,) hashable identities of the clip's frames in their source (a live
            window's (session, frame time)); given with `reuse`, frames and crops already
            encoded are not encoded again.
        at: the clip's time on the session clock, for `explain_every_s`.
        session: whose cache and label memory to use (default: `current`).
        """
        streamer = _CallbackStreamer(self.processor.tokenizer, on_text) if on_text else None
        return self._analyse([clip], [frame_ids], [at], [session or self.current], streamer)[0]

    def analyse_batch(self, clips: list[Clip], frame_ids: list | None = None, at: list | None = None,
                      sessions: list[Session] | None = None) -> list[Result]:
        """Many clips (e.g. windows of several sessions) in one `generate` call; each
        `Result` equals `analyse(clip, frame_ids=..., at=..., session=...)`'s (greedy, left
        padding; ``seconds`` is the batch's time). frame_ids, at, sessions: one per clip
        (None: no reuse, no clock, each clip a fresh session of its own). Each clip's
        frames go through its own session's cache. Used by the serving pool."""
        n = len(clips)
        sessions = sessions or [self.new_session() for _ in range(n)]
        return self._analyse(clips, frame_ids or [None] * n, at or [None] * n, sessions)

    def _analyse(self, clips: list[Clip], frame_ids: list, at: list, sessions: list[Session],
                 streamer=None) -> list[Result]:
        """encode → per-session features → one generate → each session's label memory."""
        if not len(clips) == len(frame_ids) == len(at) == len(sessions):
            raise ValueError(f"one frame_ids, at and session per clip: {len(clips)} clips, {len(frame_ids)}, "
                             f"{len(at)}, {len(sessions)}")
        started = time.perf_counter()
        clips = [self._modalities(c) for c in clips]
        batch = self.batch_inputs(clips, frame_ids, sessions)
        lengths = batch["attention_mask"].sum(dim=1).tolist() if "attention_mask" in batch \
            else [int(batch["input_ids"].shape[1])] * len(clips)
        stop = None
        if self.model.config.answer_format == "labels_first":
            stop = _PerRow([StopAfterLabels(self.processor, int(batch["input_ids"].shape[1]),
                                            self._wants_explanation(s, a)) for s, a in zip(sessions, at)])
        answers = generate(self.model, self.processor, batch, self.max_new_tokens, self.options, streamer=streamer,
                           stopping_criteria=stop)
        results = []
        for i, (clip, answer, n, s) in enumerate(zip(clips, answers, lengths, sessions)):
            row = stop.rows[i] if stop is not None else None
            stopped = row is not None and 0 in row.tokens_to_label and not row.explained(0)
            if row is not None and 0 in row.tokens_to_label:
                if row.explained(0):
                    s.explained_at = at[i]
                s.last_label = answer.parsed.label
            result = self._result(clip, answer, int(n), started,
                                  generated=row.tokens_to_label[0] if stopped else None)
            if row is not None:  # labels first: new tokens until the label list closed (None: never)
                result["tokens"]["to_label"] = row.tokens_to_label.get(0)
            results.append(result)
        return results

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

    def _result(self, clip: Clip, answer, prompt_tokens: int, started: float, generated: int | None = None) -> Result:
        """The one `Result` of a clip's answer; ``prompt_tokens``: its unpadded prompt length;
        ``generated``: its new tokens where a stop criterion ended it (else counted)."""
        text, parsed = answer.text, answer.parsed
        cfg = self.model.config
        counts = {
            "visual": tokens.visual_token_count(cfg),
            "face": tokens.face_token_count(cfg),
            "audio": tokens.audio_token_count(cfg, clip.audio.size if clip.has_audio else None),
        }
        face_frames = int(np.asarray(clip.face_present).sum()) if clip.has_video else 0
        return make_result(  # the one result shape (live.contract.result.Result)
            label=parsed.label, labels=parsed.labels, explanation=parsed.explanation, text=text,
            model=self.name,
            # tokens["text"]: the prompt's own text tokens (chat template + instruction + wrappers).
            tokens={**counts, "text": prompt_tokens - sum(counts.values()),
                    "generated": self._generated(answer.ids) if generated is None else generated},
            face_frames=face_frames,
            audio="present" if clip.has_audio else "absent",
            seconds=round(time.perf_counter() - started, 4),
        )

    @staticmethod
    def frame_ids(window) -> list | None:
        """A live window's frames' identities in their source: (T,) (stream id, frame time)."""
        session = getattr(window, "stream_id", None)
        return [(session, float(t)) for t in window.frame_times] if window.has_video else None

    def __call__(self, window, on_text: Callable[[str], None] | None = None) -> Result:
        """One live window; a window of another session (`Window.stream_id`) starts a new
        `current` session first."""
        session = getattr(window, "stream_id", None)
        if session != self.session:
            self.current = self.new_session(session)
        return self.analyse(window, on_text=on_text, frame_ids=self.frame_ids(window), at=window.end)


class _PerRow:
    """One `StopAfterLabels` per batch row (each with its own session's policy), as one
    stopping criterion: row i's criterion sees row i alone (as its row 0)."""

    def __init__(self, rows: list[StopAfterLabels]):
        self.rows = rows

    def __call__(self, input_ids, scores, **kwargs):
        return torch.cat([r(input_ids[i:i + 1], scores, **kwargs) for i, r in enumerate(self.rows)])
