"""Compare quantization plans on the same windows of a media file.

    python -m quant.experiments --model DIR --plans fp16,int8,nf4,nf4-dq,edge-8gb,edge-6gb \\
        --source FILE --out DIR [--device cpu|cuda] [--max-windows N] [--max-new-tokens N]

Each plan is loaded in turn (one at a time, freed in between) and analyses the same
windows (`quant.windows`). Per plan: weight bytes (estimated and measured), peak
memory (and, on CUDA, each window's allocator peak beside its estimate), host-resident
bytes, load time, quantize time (the direct conversion by the plan's methods, part of
the load), prefill time, decode tokens/s, and agreement with the first plan
that loads (the reference): top-1 label agreement, mean KL(ref || plan) of the
next-token distributions over the reference's answer (teacher-forced), and word-level
similarity of the explanations. A plan that fails to load or run is reported as failed
with its reason; the others still run.

Writes OUT/results.json, OUT/results.md, OUT/results.png (bar charts) and
OUT/scatter.png (memory vs KL, one labelled point per plan), and OUT/errors.log (the
tracebacks of failed plans). A plan whose method has no kernel for --device (torchao
int4 on a CPU) is refused before any work. Errors follow `live.contract.cli`: one line on stderr; bad
arguments or input (an unknown plan, a missing or damaged checkpoint, a missing source
file, an existing --out without --overwrite, --device cuda without CUDA) exit 2, a
failure while working exits 1.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

from live.contract.cli import DEVICE_DEFAULT, DEVICE_HELP, CliError, check_out, resolve_device, run_main
from live.contract.files import write_json
from model.serve.generate import COMPARE_MAX_NEW_TOKENS
from model.net.config import AUDIO_CONTEXTS

from .memory import device_name

MAX_WINDOWS = 8  # default cap; windows are spread evenly over the file
ERROR_LOG = "errors.log"  # tracebacks of failed plans and of a failed run, in OUT


class _Stamps:
    """A logits processor that only records when each decoding step's logits arrive:
    the first stamp ends the prefill (encoders + prompt), the rest are decode steps."""

    def __init__(self):
        self.times: list[float] = []

    def __call__(self, input_ids, scores):
        self.times.append(time.perf_counter())
        return scores


def _timed_generate(model, processor, batch: dict, max_new_tokens: int, options):
    """The greedy answer (`model.serve.generate`), prefill seconds, decode tokens/s
    (None for one token)."""
    from transformers import LogitsProcessorList

    from model.serve.generate import generate

    stamps = _Stamps()
    start = time.perf_counter()
    answer = generate(model, processor, batch, max_new_tokens, options,
                      logits_processor=LogitsProcessorList([stamps]))[0]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    prefill = stamps.times[0] - start
    steps = len(stamps.times) - 1
    decode = steps / (stamps.times[-1] - stamps.times[0]) if steps > 0 else None
    return answer, prefill, decode


def _analyse_window(analyser, window, device: str, peak, ref: dict | None) -> tuple[dict, dict | None]:
    """One window's row (answer, timings, its allocator peak on CUDA, agreement with the
    reference's answer ``ref``) and, when ``ref`` is None (this plan is the reference),
    the state later plans are compared with."""
    from .agreement import answer_log_probs, labels_agree, mean_kl, text_similarity
    from .memory import WindowPeak

    model = analyser.model
    with WindowPeak(device, outer=peak) as window_peak:  # CUDA: the window's allocator peak
        batch = analyser.inputs(window)  # the prompt and the clip, as the analyser encodes them
        generated, prefill, decode = _timed_generate(model, analyser.processor, batch, analyser.max_new_tokens,
                                                     analyser.options)
    answer, parsed = generated.ids, generated.parsed
    row = {"window": window.summary(), "text": generated.text, "label": parsed.label, "tokens": int(answer.numel()),
           "prefill_s": prefill, "decode_tokens_per_s": decode,
           "peak_window_bytes": window_peak.bytes}  # None on the CPU
    if ref is None:
        row.update(kl=0.0, label_agrees=True, similarity=1.0)
        return row, {"answer": answer, "log_probs": answer_log_probs(model, batch, answer),
                     "label": parsed.label, "explanation": parsed.explanation}
    row.update(kl=mean_kl(ref["log_probs"], answer_log_probs(model, batch, ref["answer"])),
               label_agrees=labels_agree(ref["label"], parsed.label),
               similarity=text_similarity(ref["explanation"], parsed.explanation))
    return row, None


def run_plan(plan, model_dir, device, windows, reference, progress, prompt, options, max_new_tokens,
             audio_context: str | None = None) -> dict:
    """Load `plan` through the one analyser loader (`model.serve.loader.load_analyser`),
    analyse every window, compare with `reference` (None: this plan becomes it — its
    per-window answers and log-probs are stored in the returned dict).
    audio_context: serve with this `config.audio_context` instead of the checkpoint's."""
    from model.serve.loader import load_analyser

    from .estimate import estimate_checkpoint, measure
    from .load import load_model
    from .memory import PeakMemory

    record = {"name": plan.name, "plan": plan.to_dict(), "status": "ok"}
    estimated = estimate_checkpoint(model_dir, plan)
    record["weights"] = {"estimated": estimated["total"], "estimated_slots": estimated["slots"],
                         "estimated_host": estimated["host"]}
    record["peak_window_estimated"] = estimated["peak_window"]
    with PeakMemory(device) as peak:
        t0 = time.perf_counter()
        analyser = load_analyser(model_dir, plan, device, load_model, max_new_tokens, prompt=prompt, options=options)
        if audio_context is not None:  # the processor and the model read the same config field
            analyser.model.config.audio_context = analyser.processor.config.audio_context = audio_context
        record["audio_context"] = analyser.model.config.audio_context
        record["load_s"] = time.perf_counter() - t0
        record["quantize_s"] = getattr(analyser.model, "quant_seconds", None)  # direct conversion, inside load_s
        measured = measure(analyser.model)
        record["weights"].update(
            measured=measured["total"], footprint=measured["footprint"], measured_slots=measured["slots"],
            measured_host=measured["host"],
        )
        per_window, ref_state = [], []
        for i, window in enumerate(windows):
            row, state = _analyse_window(analyser, window, device, peak, reference and reference["state"][i])
            per_window.append(row)
            ref_state.append(state)
            progress.update(1)
        del analyser
        gc.collect()
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    record["peak_bytes"], record["peak_kind"] = peak.bytes, peak.kind
    record["windows"] = per_window
    record.update(summarise(per_window))
    if reference is None:
        record["state"] = ref_state
    return record


def summarise(rows: list[dict]) -> dict:
    """Means over windows; decode speed as total steps over total decode time; the
    largest per-window peak (None where it was not measured: the CPU)."""
    n = len(rows)
    decode = [r["decode_tokens_per_s"] for r in rows if r["decode_tokens_per_s"]]
    peaks = [r["peak_window_bytes"] for r in rows if r.get("peak_window_bytes") is not None]
    return {
        "peak_window_bytes": max(peaks) if peaks else None,
        "prefill_s": sum(r["prefill_s"] for r in rows) / n,
        "decode_tokens_per_s": (sum(decode) / len(decode)) if decode else None,
        "label_agreement": sum(r["label_agrees"] for r in rows) / n,
        "labels_found": sum(r["label"] is not None for r in rows),
        "kl_mean": sum(r["kl"] for r in rows) / n,
        "text_similarity": sum(r["similarity"] for r in rows) / n,
    }


def run_experiments(model_dir, plans, source, out, device: str = "cpu", max_windows: int | None = MAX_WINDOWS,
                    max_new_tokens: int = COMPARE_MAX_NEW_TOKENS, hop_s: float | None = None,
                    window_s: float | None = None, faces: bool = True, prompt: str | None = None,
                    options: list[str] | None = None, progress: bool = True, audio_context: str | None = None) -> dict:
    """Run every plan (`QuantPlan`s or specs) and write the three outputs; returns the
    results dict that results.json holds. `audio_context` ("30s" | "window") overrides
    the checkpoint's for every plan (run twice to compare the two)."""
    from tqdm import tqdm

    from live.contract.cli import log_traceback, one_line
    from live.contract.media import HOP_S, WINDOW_S
    from model.serve.analyser import DEFAULT_PROMPT

    from . import windows as win
    from .plans import get_plan
    from .report import write_markdown, write_plot, write_scatter

    from model.checkpoint.check import check_checkpoint

    plans = [get_plan(p) for p in plans]
    model_dir, out = check_checkpoint(model_dir), Path(out)
    windows, how = win.load_windows(source, hop_s or HOP_S, window_s or WINDOW_S, max_windows=max_windows, faces=faces)
    prompt = prompt or DEFAULT_PROMPT
    results = {"model": str(model_dir), "source": str(source), "windows": len(windows), "window_source": how,
               "device": device, "device_name": device_name(device), "torch": torch.__version__,
               "max_new_tokens": max_new_tokens, "prompt": prompt, "reference": None, "plans": []}
    reference = None
    bar = tqdm(total=len(plans) * len(windows), desc="plans x windows", unit="window", disable=not progress)
    for plan in plans:
        bar.set_postfix_str(plan.name)
        done_before = bar.n
        try:
            record = run_plan(plan, model_dir, device, windows, reference, bar, prompt, options, max_new_tokens,
                              audio_context)
        except Exception as err:  # noqa: BLE001 — a failed plan is a result, not a crash
            record = {"name": plan.name, "plan": plan.to_dict(), "status": "failed",
                      "error": one_line(f"{type(err).__name__}: {err}")}
            log_traceback(err, out / ERROR_LOG)
            bar.update(len(windows) - (bar.n - done_before))
            gc.collect()
        if record["status"] == "ok" and reference is None:
            reference = record
            results["reference"] = plan.name
        results["plans"].append({k: v for k, v in record.items() if k != "state"})
    bar.close()
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results, default=float)
    write_markdown(results, out / "results.md")
    write_plot(results, out / "results.png")
    write_scatter(results, out / "scatter.png")
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quant.experiments", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="checkpoint folder")
    ap.add_argument("--plans", default="fp16,int8,nf4,nf4-dq,edge-8gb,edge-6gb", help="comma-separated plans; the first is the reference")
    ap.add_argument("--source", required=True, help="video file to cut windows from")
    ap.add_argument("--out", required=True, help="folder for results.json/.md/.png")
    ap.add_argument("--overwrite", action="store_true", help="replace the results in an existing --out folder")
    ap.add_argument("--device", default=DEVICE_DEFAULT, help=DEVICE_HELP)
    ap.add_argument("--max-windows", type=int, default=MAX_WINDOWS)
    ap.add_argument("--max-new-tokens", type=int, default=COMPARE_MAX_NEW_TOKENS)
    ap.add_argument("--hop", type=float, default=None, help="s between windows (live's default)")
    ap.add_argument("--window", type=float, default=None, help="s per window (live's default)")
    ap.add_argument("--no-faces", action="store_true", help="skip face detection (faces absent)")
    ap.add_argument("--prompt", default=None, help="instruction (default: the paper's analysis prompt)")
    ap.add_argument("--options", default=None, help="comma-separated labels to match the answer against")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--audio-context", choices=AUDIO_CONTEXTS, default=None,
                    help="Whisper context to serve with (default: the checkpoint's config.audio_context)")
    args = ap.parse_args(argv)
    checked: list[Path] = []  # --out once it is known to be ours: the traceback log goes there

    def work() -> int:
        from model.checkpoint.check import check_checkpoint

        from .plans import parse_plans

        try:
            plans = parse_plans(args.plans)
        except ValueError as err:
            raise CliError(err) from None
        if args.max_windows < 1 or args.max_new_tokens < 1:
            raise CliError("--max-windows and --max-new-tokens must be >= 1")
        check_checkpoint(args.model)
        if not Path(args.source).is_file():
            raise CliError(f"no such file: {args.source}")
        check_out(args.out, args.overwrite)
        checked.append(Path(args.out))
        device = resolve_device(args.device)
        from .methods import device_refusal

        for plan in plans:  # a method with no kernel for this device (torchao int4 on a CPU)
            refusal = device_refusal(plan, device)
            if refusal:
                raise CliError(refusal)
        results = run_experiments(
            args.model, plans, args.source, args.out, device=device,
            max_windows=args.max_windows,
            max_new_tokens=args.max_new_tokens, hop_s=args.hop, window_s=args.window,
            faces=not args.no_faces, prompt=args.prompt,
            options=[o.strip() for o in args.options.split(",")] if args.options else None,
            progress=not args.no_progress, audio_context=args.audio_context,
        )
        failed = [p["name"] for p in results["plans"] if p["status"] != "ok"]
        print(json.dumps({"out": args.out, "plans": len(results["plans"]), "failed": failed,
                          "windows": results["windows"]}))
        return 0

    return run_main(work, log=lambda: checked[0] / ERROR_LOG if checked else None)


if __name__ == "__main__":
    sys.exit(main())
