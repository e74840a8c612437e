"""Omni-Emotion as an analyser of live windows: media in, label + words + explanation out.

`OmniEmotionAnalyser` implements `live.worker.Analyser` (`__call__(window, on_partial)
-> Result`), loaded by `model.serve.loader.load_analyser` for the `infer` CLI, the live
engine, the app, the pool and the quantization harness. It composes one home per
concern: a stream's memory and frame reuse (`model.serve.streams`: a frame or face crop
is encoded once however many windows hold it), the labels-first explanation policy
(`model.serve.explain`), generation with the answer parsed once per new token
(`model.serve.generate`) and the result's shape (`model.serve.shaping`).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from live.contract.media import Clip
from live.contract.result import Result
from model.net.answers import ParsedAnswer
from model.net.templates import REASONING_INSTRUCTIONS
from model.serve.explain import ExplainPolicy
from model.serve.generate import ANALYSIS_MAX_NEW_TOKENS, AnswerTracker, encode, generate, prompt_tokens
from model.serve.shaping import answer_result
from model.serve.streams import StreamState, stream_features

DEFAULT_PROMPT = REASONING_INSTRUCTIONS[0]
OnPartial = Callable[[str, ParsedAnswer], None]  # (answer so far, its parse)


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
        reuse: encode each frame / face crop of a stream once (`FrameFeatureCache`);
            exact, so on by default. False runs the encoders on every window's pixels.
        explain_every_s: labels-first models only (`model.serve.explain.ExplainPolicy`):
            None: every window explains (the whole answer).

    `stream` is the analyser's own `StreamState`; `stats` is its counters (since `reset`).
    """

    def __init__(self, model, processor, prompt: str = DEFAULT_PROMPT, options: list[str] | None = None,
                 max_new_tokens: int = ANALYSIS_MAX_NEW_TOKENS, name: str | None = None,
                 use_faces: bool = True, use_audio: bool = True, reuse: bool = True,
                 explain_every_s: float | None = None):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.policy = ExplainPolicy(explain_every_s)
        self.model, self.processor, self.reuse = model, processor, reuse
        self.reset()
        self.use_faces, self.use_audio = use_faces, use_audio
        self.prompt, self.options, self.max_new_tokens = prompt, options, max_new_tokens
        self.name = name or Path(str(getattr(model.config, "_name_or_path", "") or "omni-emotion")).name

    def reset(self) -> None:
        """A new stream: forget cached frames, the last label and the counters."""
        self.stream = self.new_stream()

    def new_stream(self, id: object = None) -> StreamState:
        """A fresh `StreamState` for this analyser's model."""
        return StreamState(self.model, id)

    @property
    def stats(self) -> dict:
        return self.stream.stats

    def inputs(self, clip: Clip, frame_ids: list | None = None, stream: StreamState | None = None) -> dict:
        """The model inputs of one clip (a batch of 1 on the model's device), its frames'
        and crops' features taken from the stream's cache (default: `stream`) where
        `reuse` and `frame_ids` allow; counts the window in the stream's `stats`.
        `model(**inputs(...))` gives the prefill logits."""
        return self.batch_inputs([clip], [frame_ids], [stream or self.stream])

    def batch_inputs(self, clips: list[Clip], frame_ids: list, streams: list[StreamState]) -> dict:
        """`inputs` for many clips (left-padded), each through its own stream's cache."""
        clips = [self._modalities(c) for c in clips]
        batch = encode(self.model, self.processor, [self.prompt] * len(clips), clips)
        return stream_features(self.model, batch, clips, frame_ids, streams, self.reuse)

    def analyse(self, clip: Clip, on_partial: OnPartial | None = None, frame_ids: list | None = None,
                at: float | None = None, stream: StreamState | None = None) -> Result:
        """One clip → a `Result` (label, labels, explanation, text, model, pending, error;
        plus tokens, face_frames, audio, seconds).

        on_partial: called with the answer so far and its parse as tokens are generated
            (streaming UI: the page shows the label as soon as the parse has one).
        frame_ids: (T,) hashable identities of the clip's frames in their source (a live
            window's (stream id, frame time)); given with `reuse`, frames and crops already
            encoded are not encoded again.
        at: the clip's time on the stream's clock, for `explain_every_s`.
        stream: whose cache and label memory to use (default: `stream`).
        """
        return self._analyse([clip], [frame_ids], [at], [stream or self.stream], on_partial)[0]

    def analyse_batch(self, clips: list[Clip], frame_ids: list | None = None, at: list | None = None,
                      streams: list[StreamState] | None = None) -> list[Result]:
        """Many clips (e.g. windows of several streams) in one `generate` call; each
        `Result` equals `analyse(clip, frame_ids=..., at=..., stream=...)`'s (greedy, left
        padding; ``seconds`` is the batch's time). frame_ids, at, streams: one per clip
        (None: no reuse, no clock, each clip a fresh stream of its own). Each clip's
        frames go through its own stream's cache. Used by the serving pool."""
        n = len(clips)
        streams = streams or [self.new_stream() for _ in range(n)]
        return self._analyse(clips, frame_ids or [None] * n, at or [None] * n, streams)

    def _analyse(self, clips: list[Clip], frame_ids: list, at: list, streams: list[StreamState],
                 on_partial: OnPartial | None = None) -> list[Result]:
        """encode → per-stream features → one generate → each stream's label memory."""
        if not len(clips) == len(frame_ids) == len(at) == len(streams):
            raise ValueError(f"one frame_ids, at and stream per clip: {len(clips)} clips, {len(frame_ids)}, "
                             f"{len(at)}, {len(streams)}")
        started = time.perf_counter()
        clips = [self._modalities(c) for c in clips]
        batch = self.batch_inputs(clips, frame_ids, streams)
        lengths = batch["attention_mask"].sum(dim=1).tolist()  # each row's unpadded prompt
        labels_first = self.model.config.answer_format == "labels_first"
        explain = [self.policy.wants(s, a) for s, a in zip(streams, at)] if labels_first else None
        tracker = AnswerTracker(self.processor, prompt_tokens(batch), self.options, explain, on_partial)
        answers = generate(self.model, self.processor, batch, self.max_new_tokens, self.options, tracker=tracker)
        results = []
        for i, (clip, answer, s) in enumerate(zip(clips, answers, streams)):
            to_label = tracker.tokens_to_label.get(i)
            self.policy.remember(s, at[i], answer.parsed, to_label is not None, tracker.explained(i))
            stopped = to_label is not None and not tracker.explained(i)
            result = answer_result(self.model, self.name, clip, answer, int(lengths[i]), started,
                                   generated=to_label if stopped else None)
            if labels_first:  # new tokens until the label list closed (None: never)
                result["tokens"]["to_label"] = to_label
            results.append(result)
        return results

    def _modalities(self, clip: Clip) -> Clip:
        """The clip with the branches this analyser does not use fed as missing."""
        if not self.use_faces:
            clip = replace(clip, face_present=np.zeros_like(clip.face_present))
        if not self.use_audio:
            clip = replace(clip, audio=None, has_audio=False)
        return clip

    @staticmethod
    def frame_ids(window) -> list | None:
        """A live window's frames' identities in their source: (T,) (stream id, frame time)."""
        stream_id = getattr(window, "stream_id", None)
        return [(stream_id, float(t)) for t in window.frame_times] if window.has_video else None

    def __call__(self, window, on_partial: OnPartial | None = None) -> Result:
        """One live window; a window of another stream (`Window.stream_id`) starts a new
        own `stream` first."""
        stream_id = getattr(window, "stream_id", None)
        if stream_id != self.stream.id:
            self.stream = self.new_stream(stream_id)
        return self.analyse(window, on_partial=on_partial, frame_ids=self.frame_ids(window), at=window.end)
