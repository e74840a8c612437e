"""The GPU check (issue 23): one command for a machine with a GPU and no hub.

    .venv/bin/python bench/gpu.py --presets 0.5b,7b --plans fp16,nf4,edge-8gb,edge-6gb \\
        --device cuda --out-dir /tmp/gpu-bench
    .venv/bin/python bench/gpu.py --presets tiny --plans fp16 --device cpu --seconds 6   # the suite's run

For each preset: a random real-size checkpoint (`model.checkpoint.build --random`,
float16; reused when `--models-dir` already holds one), then for each plan
(`quant.load.load_model`) the live loop on a `live.testclip` clip (640×480, speech, a
moving face; `live.engine`, 4 s windows, hop 1 s, every window kept) through the
analyser (per-frame reuse, window audio context, labels first). Per preset × plan:

- `to_label_s` p50 / p90: window end → the label's last token (a random model never
  closes a label line, so the label is the first `label_tokens` new tokens: the label
  line's length with the checkpoint's tokenizer), the clip read as fast as possible so
  each window's analysis starts at its end;
- `to_explanation_s` p50: window end → the whole answer (`--answer-tokens`, every window
  explains here: the worst case);
- `tokens_per_s`: decode rate after the first token;
- `peak_gb` measured (`torch.cuda.max_memory_allocated`; on CPU the process's peak RSS,
  weights included, a coarse stand-in) next to the estimator's (`quant.estimate`:
  weights + `quant.window_memory.window_peak`), and the card's name.

Writes `results.json` and `results.md` (one table) to `--out-dir` and prints the JSON.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ANSWER_TOKENS = 70


class TokenClock:
    """perf_counter stamps of each generated token (a forward hook on the LM head: one
    call per generation step)."""

    def __init__(self, model):
        self.stamps: list[float] = []
        self.handle = model.lm_head.register_forward_hook(lambda m, a, o: self.stamps.append(time.perf_counter()))

    def close(self):
        self.handle.remove()


def peak_gb(device: str) -> float:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB


def windows_of(path: Path) -> list:
    from live.contract.result import make_result
    from live.engine import Engine, EngineConfig
    from live.sources import FileSource

    got = []

    def keep(window):
        got.append(window)
        return make_result(model="capture")

    Engine(FileSource(path, realtime=False), keep, config=EngineConfig(every_window=True)).run()
    return got


def checkpoint(preset: str, models_dir: Path) -> Path:
    from model.checkpoint.loading import build_random

    out = models_dir / f"{preset}-random"
    if not (out / "config.json").is_file():
        build_random(preset, out, dtype=torch.float32 if preset == "tiny" else torch.float16)
    return out


def run_plan(model_dir: Path, plan: str, device: str, windows: list, answer_tokens: int) -> dict:
    from bench.window_cost import LABEL_LINE
    from model.serve.analyser import OmniEmotionAnalyser
    from quant.estimate import estimate_config
    from quant.load import load_model
    from quant.plans import get_plan

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model, processor = load_model(model_dir, plan, device)
    load_s = time.perf_counter() - t0
    cfg = model.config
    cfg.audio_context, cfg.trim_audio, cfg.answer_format = "window", True, "labels_first"
    label_tokens = len(processor.tokenizer(LABEL_LINE, add_special_tokens=False)["input_ids"])
    analyser = OmniEmotionAnalyser(model, processor, max_new_tokens=answer_tokens, reuse=True)
    clock = TokenClock(model)
    to_label, to_full, rates = [], [], []
    try:
        for w in windows:
            clock.stamps.clear()
            started = time.perf_counter()
            analyser(w)
            done = time.perf_counter()
            s = clock.stamps
            to_label.append(s[min(label_tokens, len(s)) - 1] - started)
            to_full.append(done - started)
            if len(s) > 1:
                rates.append((len(s) - 1) / (s[-1] - s[0]))
    finally:
        clock.close()
    est = estimate_config(cfg, get_plan(plan))
    measured = peak_gb(device)
    estimated = (est["total"] + est["peak_window"]) / 1e9
    steady = to_label[1:] or to_label  # the first window encodes all 8 frames
    return {
        "plan": plan, "windows": len(windows), "load_s": round(load_s, 2), "label_tokens": label_tokens,
        "answer_tokens": answer_tokens,
        "to_label_s": {"p50": round(float(np.percentile(steady, 50)), 4), "p90": round(float(np.percentile(steady, 90)), 4),
                       "first_window": round(to_label[0], 4)},
        "to_explanation_s": {"p50": round(float(np.percentile(to_full[1:] or to_full, 50)), 4)},
        "tokens_per_s": round(float(np.median(rates)), 1) if rates else None,
        "peak_gb": {"measured": round(measured, 3), "estimated": round(estimated, 3),
                    "measured_is": "cuda max_memory_allocated" if device.startswith("cuda") else "process peak RSS",
                    "ratio": round(measured / estimated, 3) if estimated else None},
    }


def markdown(result: dict) -> str:
    lines = [f"Card: **{result['card']}**, device `{result['device']}`, {result['clip_s']} s clip, "
             f"{result['windows']} windows (4 s, hop 1 s); random weights.", "",
             "| preset | plan | to label p50 (s) | p90 (s) | to explanation p50 (s) | tokens/s | peak GB measured | "
             "peak GB estimated |", "|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r['plan']} | error: {r['error']} | | | | | |")
            continue
        lines.append(f"| {r['preset']} | {r['plan']} | {r['to_label_s']['p50']} | {r['to_label_s']['p90']} | "
                     f"{r['to_explanation_s']['p50']} | {r['tokens_per_s']} | {r['peak_gb']['measured']} | "
                     f"{r['peak_gb']['estimated']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from bench.report import emit
    from live.testclip import make_clip

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="0.5b,7b")
    p.add_argument("--plans", default="fp16,nf4,edge-8gb,edge-6gb")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seconds", type=float, default=10.0, help="test clip length")
    p.add_argument("--answer-tokens", type=int, default=ANSWER_TOKENS)
    p.add_argument("--models-dir", help="where the random checkpoints are built / reused (default: a temp folder)")
    p.add_argument("--out-dir", required=True)
    args = p.parse_args(argv)
    presets = [x for x in args.presets.split(",") if x]
    plans = [x for x in args.plans.split(",") if x]
    bad = [x for x in presets if x not in ("tiny", "0.5b", "7b")]
    if bad:
        p.error(f"unknown presets {bad}")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        models_dir = Path(args.models_dir or tmp)
        clip = Path(tmp) / "clip.mp4"
        make_clip(clip, seconds=args.seconds, speech=[(1.0, "hello there, how are you today")])
        windows = windows_of(clip)
        runs = []
        for preset in presets:
            model_dir = checkpoint(preset, models_dir)
            for plan in plans:
                try:
                    r = run_plan(model_dir, plan, args.device, windows, args.answer_tokens)
                except Exception as err:  # a plan this card cannot run: say so, go on
                    r = {"plan": plan, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
                runs.append({"preset": preset, **r})
    from quant.memory import device_name

    result = {"card": device_name(args.device), "device": args.device, "clip_s": args.seconds, "windows": len(windows),
              "torch": torch.__version__, "runs": runs}
    (out_dir / "results.md").write_text(markdown(result))
    emit(result, out_dir / "results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
