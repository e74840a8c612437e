"""One way from a prompt and media to a parsed answer: encode → generate → decode → parse.

The analyser (live windows, `model.serve.infer`, the app), the evaluation's `predict`
and the quantization comparison (`quant.experiments`) all call `encode` and `generate`
here, so they decode the same way (greedy, prompt cut off, special tokens dropped,
whitespace stripped) and read the answer with the same parser (`model.net.answers`).
`AnswerTracker` is the one place an answer is decoded and parsed: once per new token
while it grows (streaming, labels-first stopping), the last parse is the answer's.

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
PARTIAL_CHAR = "\ufffd"  # a decoded text ending in this stops inside a character: not shown yet

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


class AnswerTracker:
    """Each row's answer as its tokens arrive, read once per new token: a `transformers`
    stopping criterion that decodes the row's answer so far, parses it once when the text
    changed (`model.net.answers.parse_answer` with ``options``) and hands
    ``on_partial(text, parsed)`` on (row 0, a one-window stream; not while the text ends
    inside a character). ``explain``: one policy per row for labels-first answers: once a
    row's label list is complete (`labels_complete`), ``explain[row](parsed)`` is asked
    once; False stops the row there. ``tokens_to_label[row]``: new tokens generated when
    the list closed (absent while open). `generate` reads each row's last parse.
    """

    def __init__(self, processor, prompt_tokens: int, options: Sequence[str] | None = None,
                 explain: Sequence[Callable[[ParsedAnswer], bool]] | None = None,
                 on_partial: Callable[[str, ParsedAnswer], None] | None = None):
        self.processor, self.prompt_tokens, self.options = processor, prompt_tokens, options
        self.explain, self.on_partial = explain, on_partial
        self.tokens_to_label: dict[int, int] = {}
        self.last: dict[int, tuple[str, ParsedAnswer]] = {}  # row → (text, its parse)
        self._stop: dict[int, bool] = {}

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = [self._step(row, ids) for row, ids in enumerate(input_ids)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def _step(self, row: int, ids) -> bool:
        """Row ``row``'s new token(s): stop it?"""
        if self._stop.get(row):
            return True
        text, parsed = self.answer(row, ids[self.prompt_tokens:])
        if self.explain is not None and row not in self._stop and labels_complete(text):
            self.tokens_to_label[row] = int(ids.shape[0]) - self.prompt_tokens
            self._stop[row] = not self.explain[row](parsed)
        return self._stop.get(row, False)

    def answer(self, row: int, new_ids) -> tuple[str, ParsedAnswer]:
        """Row ``row``'s answer text of ``new_ids`` and its parse (parsed again only when
        the text changed since the last call; a change goes to ``on_partial``)."""
        text = self.processor.decode(new_ids).strip()
        if row in self.last and self.last[row][0] == text:
            return self.last[row]
        self.last[row] = text, parse_answer(text, self.options)
        if self.on_partial is not None and row == 0 and not text.endswith(PARTIAL_CHAR):
            self.on_partial(*self.last[row])
        return self.last[row]

    def explained(self, row: int) -> bool:
        """Whether the row went on past its labels (the policy asked for an explanation)."""
        return row in self._stop and not self._stop[row]


def generate(model, processor, batch: dict, max_new_tokens: int, options: Sequence[str] | None = None,
             logits_processor=None, tracker: AnswerTracker | None = None) -> list[Generated]:
    """Greedy answers for `batch` (from `encode`), one `Generated` per row.

    options: class names to match the label against (classification), else open vocabulary.
    logits_processor: passed to `model.generate` (timing stamps).
    tracker: an `AnswerTracker` (built with the same ``options``) that follows the answers
        as they grow (streaming, labels-first stopping); each row's final parse is then
        its last one, not a new one.
    """
    import torch
    from transformers import StoppingCriteriaList

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    extra = {}
    if logits_processor is not None:
        extra["logits_processor"] = logits_processor
    if tracker is not None:
        extra["stopping_criteria"] = StoppingCriteriaList([tracker])
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=processor.tokenizer.pad_token_id, **extra)
    prompt_len = prompt_tokens(batch)
    tracker = tracker or AnswerTracker(processor, prompt_len, options)
    return [Generated(row[prompt_len:].cpu(), *tracker.answer(i, row[prompt_len:]), prompt_len)
            for i, row in enumerate(out)]
