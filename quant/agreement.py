"""How far a plan's answers drift from the reference plan's (pure functions).

KL divergence is measured teacher-forced: every plan reads the reference's own answer
tokens after the same prompt, so the next-token distributions are compared position
by position on the same text — deterministic, and independent of where greedy
decoding of two plans first diverges.
"""
from __future__ import annotations

import difflib

import torch
from torch.nn import functional as F


def answer_log_probs(model, batch: dict, answer_ids: torch.Tensor) -> torch.Tensor:
    """Log-softmax of the next-token distributions over `answer_ids` after `batch`'s
    prompt, in one forward pass.

    batch: processor output for one clip (input_ids (1, L), attention_mask (1, L),
        media tensors). answer_ids: (n,) the answer tokens, n >= 1.
    Returns (n, V) float32 on the CPU: row i is the distribution that predicts answer_ids[i].
    """
    answer_ids = answer_ids.to(batch["input_ids"].device).view(1, -1)
    n = answer_ids.shape[1]
    forced = dict(batch)
    forced["input_ids"] = torch.cat([batch["input_ids"], answer_ids], dim=1)
    forced["attention_mask"] = torch.cat([batch["attention_mask"], torch.ones_like(answer_ids)], dim=1)
    with torch.inference_mode():
        logits = model(**forced, use_cache=False, logits_to_keep=n + 1).logits[0, :n]
    return F.log_softmax(logits.float(), dim=-1).cpu()


def mean_kl(ref_log_probs: torch.Tensor, log_probs: torch.Tensor) -> float:
    """Mean over positions of KL(ref || plan) in nats; inputs (n, V) log-probabilities."""
    if ref_log_probs.shape != log_probs.shape:
        raise ValueError(f"log-prob shapes differ: {tuple(ref_log_probs.shape)} vs {tuple(log_probs.shape)}")
    kl = (ref_log_probs.exp() * (ref_log_probs - log_probs)).sum(-1)
    return float(kl.clamp_min(0).mean())


def text_similarity(a: str, b: str) -> float:
    """difflib ratio in [0, 1] of two texts, compared word by word (1.0: identical)."""
    wa, wb = a.split(), b.split()
    if not wa and not wb:
        return 1.0
    return difflib.SequenceMatcher(None, wa, wb, autojunk=False).ratio()


def labels_agree(ref_label: str | None, label: str | None) -> bool:
    """Top-1 labels agree when equal ignoring case; two missing labels agree (both
    answers failed to name one), which `summarise` reports separately."""
    norm = lambda x: None if x is None else x.strip().lower()  # noqa: E731
    return norm(ref_label) == norm(label)
