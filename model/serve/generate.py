"""One way from a prompt and media to a parsed answer: encode → generate → decode → parse.

The analyser (live windows, `model.serve.infer`, the app), the evaluation's `predict`
and the quantization comparison (`quant.experiments`) all call `encode` and `generate`
here, so they decode the same way (greedy, prompt cut off, special tokens dropped,
whitespace stripped) and read the answer with the same parser (`model.net.answers`).

The generation budgets live here too, one per purpose. Importing this module is light
(no torch) so command lines can read the defaults before any model code loads.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from model.net.answers import ParsedAnswer, labels_complete, parse_answer

# max_new_tokens, per purpose. A budget only caps the answer; greedy decoding stops
# earlier at the end-of-turn token.
# One live window or one file: a label, a few open-vocabulary words and two or three
# sentences of explanation (~70 tokens in the phase-3 answers), with some room.
ANALYSIS_MAX_NEW_TOKENS = 96
# Evaluation predictions over a manifest: the phase-3 reference answers run to a
# paragraph plus the label list; a shorter budget would cut answers before their labels.
EVAL_MAX_NEW_TOKENS = 256
# Quantization comparison: every plan answers every window, so keep it short — a label
# and one sentence is enough to compare labels, KL and wording between plans.
COMPARE_MAX_NEW_TOKENS = 32
# The untrained tiny demo model: its text is noise; this cap keeps a CPU answer ~1 s.
TINY_MAX_NEW_TOKENS = 24

if TYPE_CHECKING:
    import torch


@dataclass
class Generated:
    """One answer.

    ids: the new token ids (n,) int64, on the CPU (a batch's trailing padding included).
    text: decoded, special tokens dropped, stripped.
    parsed: `parse_answer(text, options)`.
    prompt_tokens: length of the (padded) prompt the answer follows.
    """

    ids: torch.Tensor
    text: str
    parsed: ParsedAnswer
    prompt_tokens: int


def model_device(model) -> torch.device:
    """Where the model's (first materialised) parameters are."""
    return next(p for p in model.parameters() if p.device.type != "meta").device


def encode(model, processor, prompts: Sequence[str], clips: Sequence) -> dict:
    """One user turn per prompt with its clip → a left-padded batch on the model's device
    (input_ids (B, L) and the media tensors `OmniEmotionProcessor` builds)."""
    chats = [[{"role": "user", "content": p}] for p in prompts]
    batch = processor(chats, list(clips), padding_side="left")
    device = model_device(model)
    return {k: v.to(device) for k, v in batch.items()}


def prompt_tokens(batch: dict) -> int:
    """Length of the (padded) prompt of a batch from `encode`."""
    return int(batch["input_ids"].shape[1])


class StopAfterLabels:
    """A `transformers` stopping criterion for labels-first answers: once a row's label
    list is complete (`model.net.answers.labels_complete`), it asks
    `explain(parsed_labels_so_far)` once; False stops the row there, True lets it go on
    to the explanation (and the end-of-turn token). `tokens_to_label[row]`: new tokens
    generated when the list closed (None while open).
    """

    def __init__(self, processor, prompt_tokens: int, explain: Callable[[ParsedAnswer], bool] = lambda p: False):
        self.processor, self.prompt_tokens, self.explain = processor, prompt_tokens, explain
        self.tokens_to_label: dict[int, int] = {}
        self._stop: dict[int, bool] = {}

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = []
        for row, ids in enumerate(input_ids):
            if row not in self._stop:
                text = self.processor.decode(ids[self.prompt_tokens:]).strip()
                if labels_complete(text):
                    self.tokens_to_label[row] = int(ids.shape[0]) - self.prompt_tokens
                    self._stop[row] = not self.explain(parse_answer(text))
            done.append(self._stop.get(row, False))
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def explained(self, row: int) -> bool:
        """Whether the row went on past its labels (the policy asked for an explanation)."""
        return row in self._stop and not self._stop[row]


def generate(model, processor, batch: dict, max_new_tokens: int, options: Sequence[str] | None = None,
             streamer=None, logits_processor=None, stopping_criteria=None) -> list[Generated]:
    """Greedy answers for `batch` (from `encode`), one `Generated` per row.

    options: class names to match the label against (classification), else open vocabulary.
    streamer, logits_processor, stopping_criteria: passed to `model.generate` (streaming
    UI, timing stamps, `StopAfterLabels`).
    """
    import torch
    from transformers import StoppingCriteriaList

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    extra = {}
    if streamer is not None:
        extra["streamer"] = streamer
    if logits_processor is not None:
        extra["logits_processor"] = logits_processor
    if stopping_criteria is not None:
        extra["stopping_criteria"] = StoppingCriteriaList([stopping_criteria])
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=processor.tokenizer.pad_token_id, **extra)
    prompt_len = prompt_tokens(batch)
    answers = []
    for row in out:
        ids = row[prompt_len:].cpu()
        text = processor.decode(ids).strip()
        answers.append(Generated(ids, text, parse_answer(text, options), prompt_len))
    return answers
