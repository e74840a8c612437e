"""Streaming cost of the model side (issue 12): encoder reuse across windows, audio context,
tokens to the label. Prints one JSON object.

    .venv/bin/python bench/stream.py [--seconds 12] [--audio-context 30s|window]
    .venv/bin/python bench/stream.py --preset 0.5b --random   # real-size encoders, one window

Default: a `live.testclip` clip (640×480, 30 fps, speech, a moving face) runs through the
live engine (hop 1 s, window 4 s, 8 frames, every window kept); the windows are then
analysed by the tiny random model twice, with and without per-frame reuse
(`model.serve.features`), the same windows for both. Reported per mode: frames / crops /
audio seconds encoded per window, encoder seconds per window (forward hooks on the three
encoders + projectors) and analyser seconds per window; `max_abs_logit_diff` between the
two modes' prefill logits (float32); `tokens_to_label`: tokens of the label line of a
labels-first answer with the model's tokenizer (a random model never writes one, so this
counts the format's cost, not a trained model's behaviour).

`--preset 0.5b --random`: SigLIP-so400m, the Whisper-large-v3 encoder (30 s and window
context) and FaceXFormer Swin-B built from `model.net.presets` with random weights, each
timed on one window (8 frames, 8 crops, 4 s audio) on this CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from live.contract.media import AUDIO_RATE, CROP_SIZE, N_FRAMES, WINDOW_S  # noqa: E402

NEW_TOKENS = 8  # per window; the tiny model's text is noise, the prefill is what differs
ENCODERS = (("vision_tower", "multi_modal_projector"), ("face_encoder", "face_projector"),
            ("audio_encoder", "audio_projector"))
LABEL_LINE_EXAMPLE = (["worried", "tense"], "Her brows knit and her voice trembles as she speaks.")


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "note": "shared with other engineers' jobs while measured"}


def engine_windows(seconds: float) -> list:
    """The windows the live engine cuts from a test clip (hop 1 s, 4 s, 8 frames)."""
    from live.contract.result import make_result
    from live.engine import Engine, EngineConfig
    from live.sources import FileSource
    from live.testclip import make_clip

    windows = []

    def keep(window):
        windows.append(window)
        return make_result(model="capture")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        make_clip(path, seconds=seconds, speech=[(1.0, "hello there, how are you today")])
        Engine(FileSource(path, realtime=False), keep, config=EngineConfig(every_window=True)).run()
    return windows


class EncoderTimer:
    """Seconds spent in the encoders and projectors (forward hooks)."""

    def __init__(self, inner):
        self.seconds, self._t0 = 0.0, {}
        for names in ENCODERS:
            for name in names:
                mod = getattr(inner, name)
                mod.register_forward_pre_hook(lambda m, a: self._t0.__setitem__(id(m), time.perf_counter()))
                mod.register_forward_hook(lambda m, a, o: self._add(m))

    def _add(self, m):
        self.seconds += time.perf_counter() - self._t0.pop(id(m))


def tokens_to_label(processor) -> int:
    from model.net.templates import reasoning_answer

    labels, explanation = LABEL_LINE_EXAMPLE
    answer = reasoning_answer(explanation, labels, "labels_first")
    line = answer[: answer.index(".") + 1]
    return len(processor.tokenizer(line, add_special_tokens=False)["input_ids"])


def stream(seconds: float, audio_context: str) -> dict:
    from model.checkpoint.loading import build_tiny
    from model.serve.analyser import OmniEmotionAnalyser

    windows = engine_windows(seconds)
    model, processor = build_tiny(audio_context=audio_context)
    timer = EncoderTimer(model.model)
    out: dict = {"windows": len(windows), "audio_context": audio_context}
    for mode, reuse in (("reuse", True), ("no_reuse", False)):
        analyser = OmniEmotionAnalyser(model, processor, max_new_tokens=NEW_TOKENS, reuse=reuse)
        timer.seconds = 0.0
        started = time.perf_counter()
        for w in windows:
            analyser(w)
        n = max(1, analyser.stats["windows"])
        out[mode] = {
            "vision_frames_encoded_per_window": round(analyser.stats["vision_frames_encoded"] / n, 3),
            "face_crops_encoded_per_window": round(analyser.stats["face_crops_encoded"] / n, 3),
            "audio_s_encoded_per_window": round(analyser.stats["audio_s_encoded"] / n, 3),
            "encoder_s_per_window": round(timer.seconds / n, 4),
            "s_per_window": round((time.perf_counter() - started) / n, 4),
        }
    reuse = OmniEmotionAnalyser(model, processor, reuse=True)
    plain = OmniEmotionAnalyser(model, processor, reuse=False)
    worst = 0.0
    with torch.inference_mode():
        for w in windows:
            clip, ids = w, [(w.stream_id, float(t)) for t in w.frame_times]
            a, b = model(**reuse.inputs(clip, ids)).logits, model(**plain.inputs(clip, ids)).logits
            worst = max(worst, float((a - b).abs().max()))
    out["max_abs_logit_diff"] = worst
    out["tokens_to_label"] = tokens_to_label(processor)
    return out


def real_encoders(preset: str) -> dict:
    """One window of each real-size encoder, random weights, float32, this CPU."""
    from transformers import AutoModel
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from model.net.face_encoder import FaceXFormerEncoder
    from model.net.presets import preset_config

    cfg = preset_config(preset)
    rng = np.random.default_rng(0)
    out: dict = {"preset": preset, "dtype": "float32", "window_s": WINDOW_S}

    def timed(name, build, run):
        t0 = time.perf_counter()
        module = build().eval()
        built = time.perf_counter() - t0
        with torch.inference_mode():
            t0 = time.perf_counter()
            run(module)
            out[name] = {"s": round(time.perf_counter() - t0, 2), "build_s": round(built, 1),
                         "params_M": round(sum(p.numel() for p in module.parameters()) / 1e6, 1)}
        return module

    side = cfg.vision_config.image_size
    frames = torch.from_numpy(rng.standard_normal((N_FRAMES, 3, side, side)).astype(np.float32))
    timed("siglip_8_frames", lambda: AutoModel.from_config(cfg.vision_config), lambda m: m(frames))
    crops = torch.from_numpy(rng.standard_normal((N_FRAMES, 3, CROP_SIZE, CROP_SIZE)).astype(np.float32))
    timed("swin_b_8_crops", lambda: FaceXFormerEncoder(cfg.face_config), lambda m: m(crops))
    from model.net import tokens
    from model.net.modeling import whisper_encode_window

    mel_30 = torch.zeros(1, cfg.audio_config.num_mel_bins, 3000)
    enc = timed("whisper_30s_context", lambda: WhisperEncoder(cfg.audio_config), lambda m: m(mel_30))
    cfg.audio_context = "window"
    n = tokens.audio_mel_frames(cfg, int(WINDOW_S * AUDIO_RATE))
    mel_w = torch.zeros(1, cfg.audio_config.num_mel_bins, n)
    with torch.inference_mode():
        t0 = time.perf_counter()
        whisper_encode_window(enc, mel_w)
        out["whisper_window_context"] = {"s": round(time.perf_counter() - t0, 2), "mel_frames": n}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=12.0, help="test clip length")
    p.add_argument("--audio-context", choices=("30s", "window"), default="30s")
    p.add_argument("--preset", help="with --random: time this preset's real-size encoders")
    p.add_argument("--random", action="store_true", help="random weights (no download)")
    args = p.parse_args(argv)
    if args.preset and not args.random:
        p.error("--preset needs --random (weights are not downloaded here)")
    result = real_encoders(args.preset) if args.preset else stream(args.seconds, args.audio_context)
    result["machine"] = machine()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
