"""`bench/window_cost.py`: the FLOPs of one window, counted on the meta device, checked on
the tiny model against real tensors and against one whole forward."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.window_cost import STAGES, Counter, flops, window_cost
from live.contract.media import AUDIO_RATE, CROP_SIZE, N_FRAMES, WINDOW_S
from model.checkpoint.loading import build_tiny
from model.net.processor import Clip

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    return build_tiny()


@pytest.fixture(scope="module")
def meta_cost():
    return window_cost("tiny")


def test_meta_count_equals_the_real_models_count(tiny, meta_cost):
    """Shapes alone (meta) give the FLOPs the real model on real tensors runs (CPU SDPA
    included), every decode step counted one by one."""
    model, processor = tiny
    real = window_cost("tiny", model=model, tokenizer=processor.tokenizer, exact=True)
    assert real["counted_on"] == "cpu" and meta_cost["counted_on"] == "meta device"
    assert real["live"] == meta_cost["live"] and real["naive"] == meta_cost["naive"]
    for side in ("live", "naive"):
        assert meta_cost[side]["total"] == sum(meta_cost[side][s] for s in STAGES)
        assert all(meta_cost[side][s] > 0 for s in STAGES if s != "decode_explanation")


def _clip():
    rng = np.random.default_rng(0)
    return Clip(frames=rng.integers(0, 256, (N_FRAMES, 96, 128, 3), dtype=np.uint8),
                faces=rng.integers(0, 256, (N_FRAMES, CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8),
                audio=(rng.standard_normal(int(WINDOW_S * AUDIO_RATE)) * 0.1).astype(np.float32))


@pytest.mark.parametrize("context, trim", [("30s", False), ("window", True)])
def test_stages_add_up_to_one_whole_forward(tiny, meta_cost, context, trim):
    """vision + face + audio + projectors + prefill of all 8 frames = one forward of the
    model on a processor batch (logits of the last position, as generate's prefill), and
    the prompt length the bench assumes is the processor's."""
    model, processor = tiny
    cfg = model.config
    saved = cfg.audio_context, cfg.trim_audio
    cfg.audio_context, cfg.trim_audio = context, trim
    try:
        batch = dict(processor([{"role": "user", "content": "x"}], _clip()))
        from bench.window_cost import token_counts
        from model.serve.analyser import DEFAULT_PROMPT

        batch_p = dict(processor([{"role": "user", "content": DEFAULT_PROMPT}], _clip()))
        audio_tokens = int((batch_p["input_ids"] == cfg.audio_token_id).sum())
        assert token_counts(cfg, processor.tokenizer, audio_tokens)["prompt"] == batch_p["input_ids"].shape[1]
        with torch.inference_mode():
            whole = flops(lambda: model(**batch, logits_to_keep=1))
            c = Counter(model)
            states = c.audio_states(context, WINDOW_S)
            parts = (c.vision(N_FRAMES) + c.face(N_FRAMES) + c.audio(context, WINDOW_S)
                     + c.projectors(N_FRAMES, N_FRAMES, states) + c.decoder(batch["input_ids"].shape[1], [])[0])
    finally:
        cfg.audio_context, cfg.trim_audio = saved
    assert parts == whole


def test_live_path_costs_less_in_every_stage(meta_cost):
    live, naive = meta_cost["live"], meta_cost["naive"]
    for s in ("vision", "face", "audio", "projectors", "prefill"):
        assert live[s] < naive[s], s
    assert meta_cost["assumptions"]["live"]["new_frames"] == 2
    assert meta_cost["assumptions"]["naive"]["audio_tokens"] == 500
    assert meta_cost["assumptions"]["live"]["audio_tokens"] == 67
    assert meta_cost["ratio"] == round(live["total"] / naive["total"], 4)
    assert meta_cost["largest_live_stage"] in STAGES


def test_cli_prints_one_json_object(tmp_path):
    out = subprocess.run([sys.executable, "bench/window_cost.py", "--preset", "tiny", "--out", str(tmp_path / "c.json")],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    assert printed == json.loads((tmp_path / "c.json").read_text())
    assert set(printed["live"]) == set(STAGES) | {"total"}


def test_an_unmet_bound_names_the_stage_that_holds_it(monkeypatch):
    import bench.window_cost as wc

    monkeypatch.setitem(wc.BOUNDS, "tiny", 0.01)
    cost = wc.window_cost("tiny")
    assert cost["met"] is False and cost["held_by"] == cost["largest_live_stage"]
    assert cost["live"][cost["held_by"]] == max(cost["live"][s] for s in STAGES)
    monkeypatch.setitem(wc.BOUNDS, "tiny", 1.0)
    assert "held_by" not in wc.window_cost("tiny")


def test_time_runs_both_paths_on_a_random_checkpoint():
    """`--time` on the tiny preset: the same code that times the 0.5b random checkpoint
    (built with `build_random`, live warm window to label, naive window to full answer)."""
    out = subprocess.run([sys.executable, "bench/window_cost.py", "--preset", "tiny", "--time", "--answer-tokens", "16"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    timed = json.loads(out.stdout)["time"]
    assert timed["live_to_label_s"] > 0 and timed["naive_to_full_answer_s"] > 0 and timed["naive_tokens"] == 16
    assert timed["ratio"] == round(timed["live_to_label_s"] / timed["naive_to_full_answer_s"], 4)
