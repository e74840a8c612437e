"""Memory estimate of a quantization plan, on the meta device (no weights, no GPU).

    python -m quant.footprint --preset 0.5b|7b --plan NAME [--json]
    python -m quant.footprint --model DIR --plan NAME [--json]
    python -m quant.footprint --list

`--plan` takes a name of `quant.plans.PLANS` or `NAME+key=value+...` overrides.
Bytes are per plan slot and per component, computed from each method's storage rules
(`quant.methods`, `quant.estimate`); `total` is what sits on the device, `host` what the plan keeps
in host memory, `peak_window` the estimated peak device memory of analysing one
window beyond the weights (`quant.window_memory`). Errors follow `live.contract.cli`: one line on stderr; a bad plan, preset or
model folder exits 2.
"""
from __future__ import annotations

import argparse
import json
import sys

from live.contract.cli import CliError, run_main

GB = 1e9  # decimal gigabytes, as cards are sold


def _table(result: dict) -> str:
    lines = [f"plan {result['plan']['name']} on {result['model']}:"]
    for slot, n in result["slots"].items():
        lines.append(f"  {slot:>11}: {n / GB:8.3f} GB  ({result['precisions'][slot]}, {result['params'][slot]:,} params)")
    lines.append(f"  {'total':>11}: {result['total'] / GB:8.3f} GB on the device  (quant state {result['quant_state'] / GB:.3f} GB)")
    lines.append(f"  {'host':>11}: {result['host'] / GB:8.3f} GB in host memory")
    if result.get("unsupported"):
        lines.append(f"  {'float':>11}: {len(result['unsupported'])} layers of quantized slots their method cannot "
                     "take stay float (`unsupported` in --json)")
    window = result["window"]
    phases = ", ".join(f"{k} {v / GB:.3f}" for k, v in window["phases"].items())
    lines.append(f"  {'peak window':>11}: {result['peak_window'] / GB:8.3f} GB  ({window['tokens']['total']:,} prefill + "
                 f"{window['tokens']['generated']} new tokens; phases: {phases})")
    lines.append(f"  {'device need':>11}: {(result['total'] + result['peak_window']) / GB:8.3f} GB  "
                 "(weights + peak window; add the CUDA context, ~0.3-0.5 GB)")
    return "\n".join(lines)


def estimate(preset: str | None, model_dir: str | None, plan_spec: str) -> dict:
    """The estimate as a JSON-able dict (what `--json` prints)."""
    from .estimate import estimate_checkpoint, estimate_preset
    from .layout import effective_precisions, host_slots
    from .plans import get_plan

    plan = get_plan(plan_spec)
    if model_dir:
        from model.checkpoint.check import check_checkpoint

        check_checkpoint(model_dir, weights=False)
        result = estimate_checkpoint(model_dir, plan)
        where = str(model_dir)
    else:
        result = estimate_preset(preset, plan)
        where = f"preset {preset}"
    tied_note = result["params"]["lm_head"] == 0  # tied: lm_head's weight is counted under embeddings
    result.update(
        model=where,
        plan=plan.to_dict(),
        precisions={slot: f"host ({p})" if slot in host_slots(plan) else p
                    for slot, p in effective_precisions(plan, tied_note).items()},
        total_gb=result["total"] / GB,
        host_gb=result["host"] / GB,
        peak_window_gb=result["peak_window"] / GB,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m quant.footprint", description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--preset", help="model preset: tiny, 0.5b, 7b")
    src.add_argument("--model", help="checkpoint folder (only its config.json is read)")
    ap.add_argument("--plan", default="fp16", help="plan name or NAME+key=value overrides")
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--list", action="store_true", help="list the named plans and exit")
    args = ap.parse_args(argv)

    def work() -> int:
        if args.list:
            from .plans import PLANS

            plans = {name: plan.to_dict() for name, plan in PLANS.items()}
            print(json.dumps(plans, indent=1) if args.json else "\n".join(plans))
            return 0
        if not (args.preset or args.model):
            raise CliError("give --preset or --model")
        if args.preset:
            from model.net.presets import PRESETS

            if args.preset not in PRESETS:
                raise CliError(f"unknown preset {args.preset!r}; valid presets: {', '.join(PRESETS)}")
        from .plans import get_plan

        try:
            get_plan(args.plan)
        except ValueError as err:
            raise CliError(err) from None
        if args.model:
            from model.checkpoint.check import check_checkpoint

            check_checkpoint(args.model, weights=False)
        from .layout import PlacementError

        try:
            result = estimate(args.preset, args.model, args.plan)
        except PlacementError as err:  # the plan cannot work on this model: bad input
            raise CliError(err) from None
        print(json.dumps(result, indent=1) if args.json else _table(result))
        return 0

    return run_main(work)


if __name__ == "__main__":
    sys.exit(main())
