"""What one live window costs (issue 23): floating-point operations per stage of the
project's live path against the naive pipeline, for a preset at its real size.

    .venv/bin/python bench/window_cost.py --preset 0.5b|7b [--explain-every-s 10] [--out F]
    .venv/bin/python bench/window_cost.py --preset 0.5b --time [--model DIR]   # + wall time here

Prints one JSON object: `live` and `naive`, each with the FLOPs of one window per stage
(`vision`, `face`, `audio`, `projectors`, `prefill`, `decode_label`,
`decode_explanation`) and their `total`; `ratio` = live total / naive total; `bound`
(0.40 for 0.5b, 0.75 for 7b), `met`, and where it is not met `held_by`: the stage with
the most live FLOPs (what a cut must come from).

Counted, not estimated: every stage runs the preset's real modules on the meta device
(shapes only, no memory, no weights) under `torch.utils.flop_counter.FlopCounterMode`
(matmuls, convolutions and attention; norms, activations and elementwise work are not
counted, a few percent at most). The tests check on the tiny model that the meta count
equals the count of the real model on real tensors and that the stages add up to one
whole forward.

One window, steady state, 1 s hop (`live.contract.media`: 4 s windows, 8 frames):

- live (this project): per-frame reuse (`model.serve.features`) encodes only the frames
  and face crops new since the last window (8 × hop / window = 2 of each); the Whisper
  encoder runs on the window's own 4 s (`audio_context="window"`, 67 audio tokens); the
  answer is labels first: decoding stops after the label line, and the explanation is
  decoded only when the label changes or the last one is `--explain-every-s` old
  (counted at the steady-state rate hop / explain_every_s, the label unchanged);
- naive (the paper's pipeline run on every window): all 8 frames and 8 crops encoded,
  30 s of audio context with all 500 audio tokens in the prompt, the whole answer
  (explanation first, so the label comes last) decoded every window.

Prefill and each decode step run the decoder with a KV cache and the LM head on the
last position only (what `generate` does). Answer lengths: the label line is tokenised
with the checkpoint's tokenizer; the explanation is `--answer-tokens` (70, the
phase-3 answers' typical length, `model.serve.generate`) less the label line.

`--time` (0.5b): loads a random real-size checkpoint (`--model`, else built into a
temporary folder with `model.checkpoint.build --random`) and times, in the same run on
this CPU, the live path's window-end → label (a warm session: its second window) and
the naive path's window-end → full answer; `time.ratio` = live to label / naive to
full answer (bound 0.5).
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from live.contract.media import AUDIO_RATE, CROP_SIZE, HOP_S, N_FRAMES, WINDOW_S  # noqa: E402

STAGES = ("vision", "face", "audio", "projectors", "prefill", "decode_label", "decode_explanation")
BOUNDS = {"0.5b": 0.40, "7b": 0.75, "tiny": None}
TIME_BOUND = 0.5
ANSWER_TOKENS = 70  # a phase-3 answer: label line + two or three sentences
EXPLAIN_EVERY_S = 10.0
LABEL_LINE = "Open-vocabulary labels: worried, tense."
PROMPT = None  # the analyser's default prompt (model.serve.analyser.DEFAULT_PROMPT)


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def flops(fn) -> int:
    """FLOPs of `fn()` (FlopCounterMode: matmuls, convolutions, attention). PyTorch's
    table has no entry for the CPU's fused attention kernel (on the meta device SDPA
    runs as matmuls and is counted): it gets the same formula as the GPU kernels."""
    from torch.utils.flop_counter import FlopCounterMode

    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    mapping = {cpu_sdpa: _cpu_sdpa_flops} if cpu_sdpa is not None else {}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return int(counter.get_total_flops())


def token_counts(config, tokenizer, audio_tokens: int) -> dict:
    """Prompt length (the modality block, the chat and the analyser's prompt) and the
    label line's length, with the checkpoint's tokenizer."""
    from model.net.processor import OmniEmotionProcessor
    from model.serve.analyser import DEFAULT_PROMPT

    proc = OmniEmotionProcessor(tokenizer, config)
    text = proc.render([{"role": "user", "content": PROMPT or DEFAULT_PROMPT}], audio_tokens, add_generation_prompt=True)
    prompt = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    label = len(tokenizer(LABEL_LINE, add_special_tokens=False)["input_ids"])
    return {"prompt": prompt, "label_line": label}


class Counter:
    """FLOPs of each stage of one window for one model (meta or real), one per call."""

    def __init__(self, model):
        self.model, self.inner = model, model.model
        self.cfg = model.config
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype

    def _zeros(self, *shape):
        return torch.zeros(*shape, device=self.device, dtype=self.dtype)

    def vision(self, frames: int) -> int:
        side = self.cfg.vision_config.image_size
        return flops(lambda: self.inner.vision_states(self._zeros(frames, 3, side, side),
                                                      self.cfg.base_config.vision_feature_layer)) if frames else 0

    def face(self, crops: int) -> int:
        return flops(lambda: self.inner.face_encoder(self._zeros(crops, 3, CROP_SIZE, CROP_SIZE))) if crops else 0

    def audio_states(self, context: str, seconds: float) -> int:
        """Whisper encoder states the window's audio gives (before pooling)."""
        from model.net import tokens

        cfg = copy.copy(self.cfg)
        cfg.audio_context = context
        return tokens.audio_mel_frames(cfg, int(seconds * AUDIO_RATE)) // tokens.ENCODER_CONV_STRIDE

    def audio(self, context: str, seconds: float) -> int:
        from model.net.modeling import whisper_encode_window

        mel = self._zeros(1, self.cfg.audio_config.num_mel_bins, 2 * self.audio_states(context, seconds))
        enc = self.inner.audio_encoder
        return flops(lambda: enc(mel) if context == "30s" else whisper_encode_window(enc, mel))

    def projectors(self, frames: int, crops: int, audio_states: int) -> int:
        from model.net import tokens

        cfg, inner = self.cfg, self.inner
        patches = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2
        total = 0
        if frames:
            total += flops(lambda: inner.multi_modal_projector(self._zeros(frames, patches, cfg.vision_config.hidden_size)))
        if crops:
            f = tokens.face_tokens_per_frame(cfg)
            total += flops(lambda: inner.face_projector(self._zeros(crops, f, cfg.face_config.fuse_dim)))
        pooled = audio_states // cfg.audio_pool_stride
        total += flops(lambda: inner.audio_projector(self._zeros(1, pooled, cfg.audio_config.d_model)))
        if inner.fusion is not None:  # cross-attention fusion runs on every frame of every window
            v, f, h = tokens.visual_tokens_per_frame(cfg), tokens.face_tokens_per_frame(cfg), cfg.hidden_size
            total += flops(lambda: inner.fusion(self._zeros(cfg.num_frames, f, h), self._zeros(cfg.num_frames, v, h)))
        return total

    def decoder(self, prompt: int, new_tokens: list[int], exact: bool = False) -> list[int]:
        """[prefill FLOPs, then one total per entry of `new_tokens`]: a prefill of
        `prompt` positions (logits of the last only), then that many decode steps each,
        one after the other on the growing cache. A step's count is linear in the cache
        length (weights fixed, attention ∝ positions), so two steps are counted and the
        rest follow exactly (`exact`: count every step; the tests check they agree)."""
        lm, head, h = self.inner.language_model, self.model.lm_head, self.cfg.hidden_size
        state = {}

        def step(n):
            out = lm(inputs_embeds=self._zeros(1, n, h), cache=state.get("cache"), use_cache=True)
            state["cache"] = out.cache if hasattr(out, "cache") else out.past_key_values
            head(out.last_hidden_state[:, -1:])

        with torch.inference_mode():
            counts = [flops(lambda: step(prompt))]
            steps = sum(new_tokens)
            if exact:
                per_step = [flops(lambda: step(1)) for _ in range(steps)]
            else:
                first = flops(lambda: step(1))
                growth = flops(lambda: step(1)) - first if steps > 1 else 0
                per_step = [first + i * growth for i in range(steps)]
        done = 0
        for n in new_tokens:
            counts.append(sum(per_step[done:done + n]))
            done += n
        return counts


def window_cost(preset: str, answer_tokens: int = ANSWER_TOKENS, explain_every_s: float = EXPLAIN_EVERY_S,
                model=None, tokenizer=None, exact: bool = False) -> dict:
    """The JSON object (see the module docstring). `model`/`tokenizer`: count on these
    (tests: the tiny model on real tensors) instead of the preset on the meta device."""
    from model.net import tokens
    from model.net.presets import preset_config
    from model.net.tokenizer import apply_token_ids, build_sized_tokenizer, build_tiny_tokenizer
    from quant.estimate import meta_model

    if tokenizer is None:
        tokenizer = build_tiny_tokenizer() if preset == "tiny" else build_sized_tokenizer()
    if model is None:
        config = preset_config(preset, vocab_size=len(tokenizer) if preset == "tiny" else None)
        apply_token_ids(config, tokenizer)
        model = meta_model(config)
    counter, cfg = Counter(model), model.config
    new_frames = round(N_FRAMES * HOP_S / WINDOW_S)
    explain_share = 1.0 if not explain_every_s else min(1.0, HOP_S / explain_every_s)

    live_cfg = copy.copy(cfg)
    live_cfg.audio_context, live_cfg.trim_audio = "window", True
    naive_cfg = copy.copy(cfg)
    naive_cfg.audio_context, naive_cfg.trim_audio = "30s", False
    live_audio = tokens.audio_token_count(live_cfg, int(WINDOW_S * AUDIO_RATE))
    naive_audio = tokens.audio_token_count(naive_cfg, int(WINDOW_S * AUDIO_RATE))
    live_len = token_counts(live_cfg, tokenizer, live_audio)
    naive_len = token_counts(naive_cfg, tokenizer, naive_audio)
    label = live_len["label_line"]
    explanation = max(0, answer_tokens - label)

    live_states = counter.audio_states("window", WINDOW_S)
    naive_states = counter.audio_states("30s", WINDOW_S)
    prefill, to_label, explain = counter.decoder(live_len["prompt"], [label, explanation], exact)
    live = {
        "vision": counter.vision(new_frames),
        "face": counter.face(new_frames),
        "audio": counter.audio("window", WINDOW_S),
        "projectors": counter.projectors(new_frames, new_frames, live_states),
        "prefill": prefill,
        "decode_label": to_label,
        "decode_explanation": round(explain * explain_share),
    }
    n_prefill, n_answer = counter.decoder(naive_len["prompt"], [answer_tokens], exact)
    naive = {
        "vision": counter.vision(N_FRAMES),
        "face": counter.face(N_FRAMES),
        "audio": counter.audio("30s", WINDOW_S),
        "projectors": counter.projectors(N_FRAMES, N_FRAMES, naive_states),
        "prefill": n_prefill,
        "decode_label": n_answer,  # explanation first: the label is the answer's last line
        "decode_explanation": 0,
    }
    for side in (live, naive):
        side["total"] = sum(side[s] for s in STAGES)
    ratio = live["total"] / naive["total"]
    bound = BOUNDS.get(preset)
    out = {
        "preset": preset,
        "counted_on": "meta device" if counter.device.type == "meta" else str(counter.device),
        "window": {"window_s": WINDOW_S, "hop_s": HOP_S, "frames": N_FRAMES},
        "live": live,
        "naive": naive,
        "ratio": round(ratio, 4),
        "bound": bound,
        "met": None if bound is None else ratio <= bound,
        "live_share": {s: round(live[s] / live["total"], 4) for s in STAGES},
        "stage_ratio": {s: round(live[s] / naive[s], 4) if naive[s] else None for s in STAGES},
        "assumptions": {
            "live": {"new_frames": new_frames, "new_crops": new_frames, "audio_context": "window",
                     "audio_tokens": live_audio, "prompt_tokens": live_len["prompt"], "label_tokens": label,
                     "explanation_tokens": explanation, "explain_every_s": explain_every_s,
                     "explanations_per_window": explain_share},
            "naive": {"frames": N_FRAMES, "crops": N_FRAMES, "audio_context": "30s", "audio_tokens": naive_audio,
                      "prompt_tokens": naive_len["prompt"], "answer_tokens": answer_tokens},
        },
    }
    out["largest_live_stage"] = max(STAGES, key=lambda s: live[s])
    if bound is not None and not out["met"]:
        out["held_by"] = out["largest_live_stage"]
    return out


# ---- wall time on this machine (--time) ------------------------------------------------


def window_clip(k: int, rng_seed: int = 0):
    """Window k of a synthetic session (frames at the live sampling times, one face crop
    per frame, 4 s of noise): consecutive windows share 6 of their 8 frames."""
    from model.net.processor import Clip

    times = k * HOP_S + (np.arange(N_FRAMES) + 0.5) * WINDOW_S / N_FRAMES
    frames, crops = [], []
    for t in times:
        rng = np.random.default_rng(int(round(t * 1000)) + rng_seed)
        frames.append(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
        crops.append(rng.integers(0, 256, (CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8))
    audio = (np.random.default_rng(k).standard_normal(int(WINDOW_S * AUDIO_RATE)) * 0.1).astype(np.float32)
    clip = Clip(frames=np.stack(frames), faces=np.stack(crops), face_present=np.ones(N_FRAMES, bool), audio=audio)
    return clip, [("s", round(float(t), 3)) for t in times]


def time_paths(model_dir: str, label_tokens: int, answer_tokens: int, windows: int = 2) -> dict:
    """Window-end → label (live, warm session) and → full answer (naive), one run."""
    from model.checkpoint.loading import load
    from model.serve.analyser import OmniEmotionAnalyser

    model, processor = load(model_dir)
    cfg = model.config  # the processor reads the same object
    out: dict = {"threads": torch.get_num_threads(), "dtype": str(next(model.parameters()).dtype)}

    cfg.audio_context, cfg.trim_audio, cfg.answer_format = "window", True, "labels_first"
    live = OmniEmotionAnalyser(model, processor, max_new_tokens=label_tokens, reuse=True)
    # A random model never closes a label list, so the label is `label_tokens` new tokens.
    stream = live.new_stream("s")
    live_s = []
    for k in range(windows):
        clip, ids = window_clip(k)
        t0 = time.perf_counter()
        live.analyse(clip, frame_ids=ids, stream=stream)
        live_s.append(time.perf_counter() - t0)
    out["live_to_label_s"] = round(live_s[-1], 2)
    out["live_first_window_s"] = round(live_s[0], 2)

    cfg.audio_context, cfg.trim_audio, cfg.answer_format = "30s", False, "explanation_first"
    naive = OmniEmotionAnalyser(model, processor, max_new_tokens=answer_tokens, reuse=False)
    clip, _ = window_clip(windows - 1)
    t0 = time.perf_counter()
    res = naive.analyse(clip)
    out["naive_to_full_answer_s"] = round(time.perf_counter() - t0, 2)
    out["naive_tokens"] = res.get("tokens", {}).get("generated") if isinstance(res, dict) else None
    out["ratio"] = round(out["live_to_label_s"] / out["naive_to_full_answer_s"], 4)
    out["bound"] = TIME_BOUND
    out["met"] = out["ratio"] <= TIME_BOUND
    return out


def main(argv: list[str] | None = None) -> int:
    from bench.report import emit

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("tiny", "0.5b", "7b"), required=True)
    p.add_argument("--answer-tokens", type=int, default=ANSWER_TOKENS)
    p.add_argument("--explain-every-s", type=float, default=EXPLAIN_EVERY_S,
                   help="live: explain when the label changes or the last explanation is this old (0: every window)")
    p.add_argument("--time", action="store_true", help="also time both paths on this machine (random checkpoint)")
    p.add_argument("--model", help="with --time: a random checkpoint of --preset (default: build one)")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    if args.answer_tokens < 1:
        p.error("--answer-tokens must be >= 1")
    if args.time and args.preset == "7b":
        p.error("--time runs on this CPU: use --preset 0.5b (or tiny)")
    result = window_cost(args.preset, args.answer_tokens, args.explain_every_s)
    if args.time:
        from bench.stream import machine

        label = result["assumptions"]["live"]["label_tokens"]
        if args.model:
            result["time"] = time_paths(args.model, label, args.answer_tokens)
        else:
            from model.checkpoint.loading import build_random

            with tempfile.TemporaryDirectory() as tmp:
                build_random(args.preset, tmp)
                result["time"] = time_paths(tmp, label, args.answer_tokens)
        result["time"]["machine"] = machine()
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
