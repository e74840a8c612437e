"""The estimator's peak against the measured one on this CPU (issue 23): loading a
checkpoint with a float plan and analysing one live window, process RSS sampled.

    .venv/bin/python -m model.checkpoint.build --preset 0.5b --random --out /tmp/0.5b-fp32
    .venv/bin/python bench/peak_memory.py --model /tmp/0.5b-fp32 --plan fp16+dtype=fp32 [--windows 2]
        [--new-tokens 8] [--tensors] [--out F]

Prints one JSON object: `estimate` (bytes: `quant.estimate` weights, the window peak of
`quant.window_memory.window_peak` for the prompt and answer lengths this run had, and
their sum), `measured` (bytes, below), `ratio` (measured / estimate, per part) and
`contains` (what each number holds, in words).

Measured, in one process (`quant.memory.PeakMemory`: /proc/self/statm every 5 ms):

- `base`: RSS once every library is imported, the window's pictures and sound made,
  freed heap handed back (`malloc_trim`); every other number is above it.
- `load`: `quant.load.load_model` on the CPU: its sampled peak, the RSS once it
  returned (`after`, split into anonymous memory and file pages), the same once every
  weight was read once and freed heap handed back (`kept`: a load in the checkpoint's
  own dtype leaves the weights in the mapped safetensors pages, resident only once
  read), and the bytes of the loaded tensors (`quant.estimate.measure`, exact).
- `windows`: each window's sampled peak above the RSS at its start (freed heap handed
  back before each). The first window of the process is cold (kernels' first use,
  lazily made thread pools and caches); the others are warm. Each is a new session of
  `OmniEmotionAnalyser` (per-frame reuse on, so all 8 frames and crops are encoded),
  `--new-tokens` new tokens.
- `tensor_peak` (`--tensors`): one more window under `torch.profiler`
  (`quant.memory.profiled_peak`): the exact peak of live CPU tensors, which is what the
  estimator models, without the allocator's and the libraries' share of RSS.
- `processor`: RSS of loading the checkpoint's processor (tokenizer) once more,
  afterwards: what `load` holds beyond the model's tensors that the estimator does not
  price.
- `total`: the peak over loading + the first window = max(load peak, kept + window
  peak) (the weights all resident, as a GPU holds them).

A window's RSS also holds what glibc's malloc keeps of freed blocks (varying run to
run); `MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=0` in the environment
gives every block over 64 KB its own mapping, returned when freed, and takes that out
(docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOLERANCE = 0.10  # issue 23: estimator and measurement within 10%
DEFAULT_PLAN = "fp16+dtype=fp32"
DEFAULT_NEW_TOKENS = 8  # the decode adds a few KB of KV cache per token: the peak is the encoders' or the prefill's


def rss() -> dict:
    """{"resident", "file", "anon"} bytes now (`quant.memory.rss_parts`)."""
    from quant.memory import rss_parts

    resident, file_backed = rss_parts()
    return {"resident": resident, "file": file_backed, "anon": resident - file_backed}


def trimmed() -> dict:
    """RSS after collecting garbage and handing freed heap pages back to the system."""
    from live.page.hosting import release_memory

    release_memory()
    return rss()


def above(now: dict, base: dict) -> dict:
    return {k: now[k] - base[k] for k in now}


def touch(model) -> None:
    """Read every parameter and buffer once. A load that keeps the checkpoint's dtype
    leaves its tensors in the safetensors files' mapped pages, which become resident
    only when first read: without this the first window would fault the weights in and
    count them as its own."""
    import itertools

    import torch

    with torch.inference_mode():
        for t in itertools.chain(model.parameters(), model.buffers()):
            t.sum()


def measure_load(model_dir: str, plan, base: dict):
    """(model, processor, {"peak", "peak_anon", "after", "kept", "tensors"}): `after` as
    `load_model` returned, `kept` once every weight was read (`touch`) and freed heap
    handed back."""
    from quant.estimate import measure
    from quant.load import load_model
    from quant.memory import PeakMemory

    with PeakMemory("cpu") as peak:
        model, processor = load_model(model_dir, plan, "cpu")
    after = above(rss(), base)
    touch(model)
    kept = above(trimmed(), base)
    return model, processor, {"peak": peak.bytes, "peak_anon": peak.anon_bytes, "after": after, "kept": kept,
                              "tensors": measure(model)["total"]}


def measure_window(analyser, clip, ids) -> tuple[dict, dict]:
    """(result, {"start", "peak", "peak_anon"}) of one window in a new session."""
    from quant.memory import PeakMemory

    start = trimmed()
    stream = analyser.new_stream("peak")
    with PeakMemory("cpu") as peak:
        result = analyser.analyse(clip, frame_ids=ids, stream=stream)
    return result, {"start_resident": start["resident"], "peak": peak.bytes, "peak_anon": peak.anon_bytes}


def estimate(model, plan, result) -> dict:
    """Weights and the window peak as `quant.estimate` prices them, for the prompt and
    answer lengths the measured window had."""
    from quant.estimate import estimate_model, meta_model
    from quant.window_memory import WRAPPER_TOKENS, window_peak

    meta = meta_model(model.config, plan)
    tokens = result["tokens"]
    w = window_peak(meta, plan, new_tokens=tokens["generated"], prompt_tokens=tokens["text"] - WRAPPER_TOKENS)
    weights = estimate_model(meta, plan)["total"]
    return {"weights": weights, "window": w["peak"], "total": weights + w["peak"], "window_phase": w["peak_phase"],
            "phases": w["phases"], "tokens": w["tokens"]}


def ratios(est: dict, meas: dict) -> dict:
    first = meas["windows"][0]
    warm = meas["windows"][1:] or meas["windows"]
    out = {
        "weights_tensors": meas["load"]["tensors"] / est["weights"],
        "weights_rss_kept": meas["load"]["kept"]["resident"] / est["weights"],
        "window_first": first["peak"] / est["window"],
        "window_warm": max(w["peak"] for w in warm) / est["window"],
        "total": meas["total"] / est["total"],
    }
    if "tensor_peak" in meas:
        out["window_tensors"] = meas["tensor_peak"] / est["window"]
    return {k: round(v, 4) for k, v in out.items()}


CONTAINS = {
    "estimate.weights": "the plan's device-resident parameters and buffers (quant.estimate)",
    "estimate.window": "the largest phase of one window beyond the weights: processor tensors, embeddings, "
                       "one encoder's or the decoder's activations, KV cache, last logits (quant.window_memory)",
    "measured.load.tensors": "the loaded model's tensors, counted exactly (quant.estimate.measure)",
    "measured.load.kept": "RSS after load, every weight read once, malloc_trim: tensors (anonymous, or the "
                          "checkpoint's mapped file pages where the load kept its dtype) + tokenizer/processor + "
                          "the model's Python objects",
    "measured.windows[].peak": "RSS peak of one window above its start: its tensors + malloc's retained and "
                               "fragmented heap + libraries' lazily made buffers (oneDNN, OpenMP) + code pages "
                               "first touched; the per-frame cache's features stay after it",
    "measured.tensor_peak": "exact peak of live CPU tensors of one window (torch.profiler), allocator aside",
    "measured.total": "RSS peak over loading + the first window above the base",
}


def run(model_dir: str, plan_spec: str, windows: int, new_tokens: int, tensors: bool) -> dict:
    import torch

    import quant.load  # noqa: F401 - imported before the base, as everything loading uses
    from bench.window_cost import window_clip
    from model.net.processor import OmniEmotionProcessor
    from model.serve.analyser import OmniEmotionAnalyser
    from quant.memory import device_name, profiled_peak
    from quant.plans import get_plan

    plan = get_plan(plan_spec)
    clip, ids = window_clip(0)
    gc.collect()
    base = trimmed()
    model, processor, load = measure_load(model_dir, plan, base)
    analyser = OmniEmotionAnalyser(model, processor, max_new_tokens=new_tokens)
    results, per_window = [], []
    for _ in range(windows):
        result, w = measure_window(analyser, clip, ids)
        results.append(result)
        per_window.append(w)
    meas = {"base": base, "load": load, "windows": per_window,
            "total": max(load["peak"], load["kept"]["resident"] + per_window[0]["peak"])}
    if tensors:
        trimmed()
        stream = analyser.new_stream("profiled")
        _, meas["tensor_peak"] = profiled_peak(analyser.analyse, clip, frame_ids=ids, stream=stream)
    before = trimmed()
    again = OmniEmotionProcessor.from_pretrained(model_dir, config=model.config)
    meas["processor"] = rss()["resident"] - before["resident"]
    del again
    est = estimate(model, plan, results[0])
    return {
        "model": str(model_dir), "plan": plan.to_dict(), "dtype": plan.compute_dtype,
        "machine": {"device": device_name("cpu"), "torch_threads": torch.get_num_threads()},
        "tokens": results[0]["tokens"],
        "estimate": est, "measured": meas, "ratio": ratios(est, meas), "tolerance": TOLERANCE,
        "contains": CONTAINS,
    }


def main(argv: list[str] | None = None) -> int:
    from bench.report import emit
    from model.checkpoint.check import check_checkpoint
    from quant.plans import get_plan

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a checkpoint folder (e.g. a random 0.5b one)")
    p.add_argument("--plan", default=DEFAULT_PLAN, help="a float plan: fp16+dtype=fp32 or fp16+dtype=bf16")
    p.add_argument("--windows", type=int, default=2, help="windows measured one after the other (the first is cold)")
    p.add_argument("--new-tokens", type=int, default=DEFAULT_NEW_TOKENS)
    p.add_argument("--tensors", action="store_true", help="also profile one window's exact tensor peak (slow)")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    if args.windows < 1 or args.new_tokens < 1:
        p.error("--windows and --new-tokens must be >= 1")
    try:
        check_checkpoint(args.model)
        get_plan(args.plan)
    except (FileNotFoundError, ValueError) as err:
        p.error(str(err))
    emit(run(args.model, args.plan, args.windows, args.new_tokens, args.tensors), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
