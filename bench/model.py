"""Model benchmark: tokens per live window for each preset, and measured CPU speed of the
tiny model (prefill seconds, decode tokens/s). Prints one JSON object.

    .venv/bin/python bench/model.py [--window-s 4] [--repeats 3]

The tiny model's numbers measure the pipeline's overhead (processor, encoders, merging),
not a real model's latency; on a noisy machine compare ratios, not absolutes.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.net import tokens  # noqa: E402
from model.checkpoint.loading import build_tiny  # noqa: E402
from model.net.presets import PRESETS, preset_config  # noqa: E402
from model.net.processor import Clip  # noqa: E402
from live.contract.media import AUDIO_RATE as SAMPLE_RATE, CROP_SIZE, N_FRAMES  # noqa: E402  (Hz)

NEW_TOKENS = 32  # generated per timed run (decode is measured over tokens 2..32)


def window_tokens(window_s: float) -> dict:
    out = {}
    for name in PRESETS:
        cfg = preset_config(name)
        for trim in (True, False):
            cfg.trim_audio = trim
            counts = {
                "visual": tokens.visual_token_count(cfg),
                "face": tokens.face_token_count(cfg),
                "audio": tokens.audio_token_count(cfg, int(window_s * SAMPLE_RATE)),
            }
            counts["modalities_total"] = sum(counts.values())
            out[f"{name}{'' if trim else '_untrimmed'}"] = counts
    return out


def tiny_speed(window_s: float, repeats: int) -> dict:
    model, processor = build_tiny()
    rng = np.random.default_rng(0)
    clip = Clip(
        # a window's frames are already sampled (live.contract.media.sample_frames): N_FRAMES of them
        frames=rng.integers(0, 256, (N_FRAMES, 480, 640, 3), dtype=np.uint8),
        faces=rng.integers(0, 256, (N_FRAMES, CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8),
        audio=(rng.standard_normal(int(window_s * SAMPLE_RATE)) * 0.1).astype(np.float32),
    )
    chat = [{"role": "user", "content": "What emotion does the person show? Explain."}]
    m = model.model

    def timed(fn) -> float:
        times = []
        for _ in range(repeats + 1):  # the first round warms up
            t0 = time.perf_counter()
            with torch.inference_mode():
                fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times[1:])

    batch = processor(chat, clip)
    gen = lambda n, **kw: model.generate(**batch, max_new_tokens=n, min_new_tokens=n, do_sample=False, **kw)  # noqa: E731
    one, many = timed(lambda: gen(1)), timed(lambda: gen(NEW_TOKENS))
    rates = []
    for _ in range(repeats + 1):  # the first round warms up
        with torch.inference_mode():
            rates.append(decode_rate(lambda clock: gen(NEW_TOKENS, logits_processor=clock)))
    return {
        "prompt_tokens": int(batch["input_ids"].shape[1]),
        "processor_s": round(timed(lambda: processor(chat, clip)), 4),
        "vision_s": round(timed(lambda: m.visual_features(batch["pixel_values_videos"])), 4),
        "face_s": round(timed(lambda: m.face_features(batch["face_pixel_values"])), 4),
        "audio_s": round(timed(lambda: m.audio_features(batch["input_features"])), 4),
        "prefill_s": round(timed(lambda: model(**batch)), 4),
        "generate_1_token_s": round(one, 4),
        f"generate_{NEW_TOKENS}_tokens_s": round(many, 4),
        # Tokens 2..NEW_TOKENS timed step by step inside one generate (prefill excluded),
        # so one repeat is enough for a number.
        "decode_tokens_per_s": round(statistics.median(rates[1:]), 1),
        "decode_measured": f"per-step clock inside generate, {NEW_TOKENS - 1} decode steps, median of {repeats}",
    }


class StepClock:
    """A logits processor that only notes when each generation step's logits arrive:
    step 1 ends the prefill, every later step is one decoded token."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids, scores):
        self.times.append(time.perf_counter())
        return scores


def decode_rate(run) -> float:
    """Decoded tokens per second of ``run(clock)`` (a generate of NEW_TOKENS >= 2 with
    the clock as its logits processor): (steps - 1) / (last step - first step)."""
    from transformers import LogitsProcessorList

    clock = StepClock()
    run(LogitsProcessorList([clock]))
    if len(clock.times) < 2:
        raise RuntimeError(f"generate made {len(clock.times)} step(s); decode needs at least 2")
    return (len(clock.times) - 1) / (clock.times[-1] - clock.times[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window-s", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs after a warm-up (>= 1)")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    torch.manual_seed(0)
    print(json.dumps({
        "machine": f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}",
        "window_s": args.window_s,
        "tokens_per_window": window_tokens(args.window_s),
        "tiny_cpu": tiny_speed(args.window_s, args.repeats),
    }, indent=2))


if __name__ == "__main__":
    main()
