"""A clip's generated answer → the one result shape (`live.contract.result.Result`)."""
from __future__ import annotations

import time

import numpy as np

from live.contract.result import Result, make_result
from model.net import tokens
from model.serve.generate import Generated


def generated_count(model, ids) -> int:
    """Tokens generated up to and including the first end token (a batch row's
    padding after it not counted): the same count alone or in a batch."""
    ends = model.generation_config.eos_token_id
    ends = set(ends if isinstance(ends, (list, tuple)) else [ends]) - {None}
    for i, t in enumerate(ids.tolist()):
        if t in ends:
            return i + 1
    return int(ids.numel())


def answer_result(model, name: str, clip, answer: Generated, prompt_tokens: int, started: float,
                  generated: int | None = None) -> Result:
    """The `Result` of ``clip``'s answer; ``prompt_tokens``: its unpadded prompt length;
    ``generated``: its new tokens where a stop criterion ended it (else counted);
    ``started``: `time.perf_counter()` when the analysis began."""
    parsed, cfg = answer.parsed, model.config
    counts = {
        "visual": tokens.visual_token_count(cfg),
        "face": tokens.face_token_count(cfg),
        "audio": tokens.audio_token_count(cfg, clip.audio.size if clip.has_audio else None),
    }
    return make_result(
        label=parsed.label, labels=parsed.labels, explanation=parsed.explanation, text=answer.text, model=name,
        # tokens["text"]: the prompt's own text tokens (chat template + instruction + wrappers).
        tokens={**counts, "text": prompt_tokens - sum(counts.values()),
                "generated": generated_count(model, answer.ids) if generated is None else generated},
        face_frames=int(np.asarray(clip.face_present).sum()) if clip.has_video else 0,
        audio="present" if clip.has_audio else "absent",
        seconds=round(time.perf_counter() - started, 4),
    )
