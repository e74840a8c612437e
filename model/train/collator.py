"""Batches for training: the processor does padding, label masking and the exact
placeholder counts; this only calls it the training way and names bad samples.
"""
from __future__ import annotations

from typing import Any

import torch

from model.net.answers import reformat_answer
from model.train.dataset import SampleError
from model.net.processor import IGNORE_INDEX, OmniEmotionProcessor


class TrainCollator:
    """`TrainDataset` items → model inputs.

    Calls `processor(conversations, clips, return_labels=True, padding_side="right")`:
    right padding (causal loss needs no left pad), every token of the prompt — system,
    user turn and the modality placeholders — labelled -100, only the final assistant
    answer (and its end-of-turn token) carries loss.

    Returns a plain dict: input_ids, attention_mask, labels (B, L); and, when the batch
    has them, pixel_values_videos (B, T, 3, S, S), face_pixel_values (B, T, 3, 224, 224),
    face_present (B, T), input_features (B, 128, 3000) (or (B, 128, M) in the "window"
    audio context: the processor reads `config.audio_context`); audio_lengths (B,) always.

    Phase-3 answers are rendered in the model config's `answer_format` (either order in
    the manifest), the order the analyser then expects.
    """

    def __init__(self, processor: OmniEmotionProcessor):
        self.processor = processor

    def _call(self, items: list[dict[str, Any]]):
        fmt = self.processor.config.answer_format
        convs = [it["conversation"][:-1] + [{**it["conversation"][-1],
                                              "content": reformat_answer(it["conversation"][-1]["content"], fmt)}]
                 for it in items]
        return self.processor(
            convs,
            [it["clip"] for it in items],
            return_labels=True,
            padding_side="right",
        )

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not items:
            raise ValueError("empty batch")
        try:
            batch = self._call(items)
        except ValueError as err:
            # Find which sample is bad so the error names it (only on the error path).
            for it in items:
                try:
                    self._call([it])
                except ValueError as single:
                    raise SampleError(f"sample {it['id']!r}: {single}") from single
            ids = [it["id"] for it in items]
            raise SampleError(f"samples {ids} cannot share a batch: {err}") from err
        out = dict(batch)
        for i, it in enumerate(items):
            if not (out["labels"][i] != IGNORE_INDEX).any():
                raise SampleError(f"sample {it['id']!r}: its answer has no tokens to learn")
        return out
