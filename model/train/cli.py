"""Train Omni-Emotion, one phase of paper §4.4 at a time, under `accelerate`.

    python -m model.train --phase 1|2|3 --model DIR --data MANIFEST --out DIR [--cache DIR]
    accelerate launch --config_file configs/accelerate/ddp.yaml -m model.train --phase 3 ...

Defaults per phase (paper §4.4): what trains (`set_trainable_phase`), lr 1e-3 / 1e-3 /
1e-5, effective batch 256 / 256 / 128 (reached by gradient accumulation), epochs
1 / 1 / 3; cosine schedule with 3 % warmup. See docs/training.md.
"""
from __future__ import annotations

import argparse
import os
import sys

from model.train.lora import LoraSettings
from model.train.trainer import WARMUP_RATIO, Loader, TrainResult, TrainSettings, run_training

DEFAULT_QLORA_PLAN = "nf4"


def train(
    phase: int,
    model_dir: str,
    data: str,
    out: str,
    cache: str | None = None,
    max_steps: int | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch: int | None = None,
    grad_accum: int | None = None,
    warmup_ratio: float = WARMUP_RATIO,
    weight_decay: float = 0.0,
    max_grad_norm: float = 1.0,
    lora: bool = False,
    qlora: bool = False,
    lora_r: int = 64,
    lora_alpha: int = 16,
    lora_dropout: float = 0.05,
    gradient_checkpointing: bool = True,
    precision: str = "auto",
    dtype: str | None = None,
    save_every: int = 500,
    resume: str | bool = False,
    merge: bool = True,
    seed: int = 0,
    workers: int = 0,
    progress: bool = True,
    loader: Loader | None = None,
) -> TrainResult:
    """Train one phase and write checkpoints, `OUT/final`, `OUT/log.csv`, `OUT/loss.png`.

    Args:
        phase: 1 (audio projector, audio-text data), 2 (face projector, frames + faces),
            3 (projectors + frame embeddings + fusion + LLM, all modalities).
        model_dir: checkpoint folder to start from (`model.checkpoint.build` / a previous phase's final).
        data: JSONL manifest (`model/data/manifest.py`); media resolve against its folder.
        out: output folder.
        cache: preprocessing cache folder (`model/data/preprocess.py`); None decodes
            every sample on the fly (slow; needs mediapipe for the face crops).
        max_steps: optimizer steps to run (overrides epochs).
        epochs: passes over the data (default 1 / 1 / 3).
        lr: peak learning rate (default 1e-3 / 1e-3 / 1e-5).
        batch: samples per device per forward pass (default 4 / 4 / 2).
        grad_accum: micro-batches per optimizer step; default reaches the paper's
            effective batch: ceil(256 or 128 / (batch × processes)).
        warmup_ratio: fraction of steps with linear warmup before the cosine decay.
        weight_decay: AdamW weight decay.
        max_grad_norm: gradient clipping (<= 0: no clipping; the norm is still logged).
        lora: peft LoRA on the LLM's attention/MLP projections (phase 3 only); the
            phase's projectors still train in full.
        qlora: like `lora`, with the model loaded through `loader` in 4-bit (phases
            1-2: a frozen 4-bit LLM and no adapters). Needs `loader`.
        lora_r, lora_alpha, lora_dropout: adapter rank, scale numerator, dropout.
        gradient_checkpointing: recompute activations in backward (less memory, ~30 % slower).
        precision: auto (the launcher's setting, else bf16 on a GPU that has it, else
            fp32), bf16, fp16 or no.
        dtype: weights' dtype when loading (e.g. "bfloat16"); None keeps the checkpoint's.
        save_every: checkpoint every N optimizer steps (0: only at the end).
        resume: True / "latest" for OUT's newest checkpoint, or a checkpoint folder.
        merge: LoRA / QLoRA: merge the adapter into the full-precision base as OUT/final.
        seed: seeds Python, numpy, torch and the data order.
        workers: DataLoader worker processes.
        progress: show a progress bar.
        loader: (model_dir, device) -> (model, processor); default `model.checkpoint.loading.load`.

    Returns:
        TrainResult(out, final, steps, losses, plan).

    Raises:
        ValueError: a bad setting (named), a bad sample (its id), a resume that does
            not match the checkpoint's plan.
    """
    if lora and qlora:
        raise ValueError("choose one of lora and qlora")
    if qlora and loader is None:
        raise ValueError("qlora needs a 4-bit loader (the CLI uses quant.load_model)")
    settings = TrainSettings(
        phase=phase,
        model_dir=model_dir,
        data=data,
        out=out,
        cache=cache,
        max_steps=max_steps,
        epochs=epochs,
        lr=lr,
        batch=batch,
        grad_accum=grad_accum,
        warmup_ratio=warmup_ratio,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
        # QLoRA in phases 1-2: 4-bit frozen LLM, nothing to adapt.
        lora=LoraSettings(lora_r, lora_alpha, lora_dropout) if (lora or (qlora and phase == 3)) else None,
        quantized=qlora,
        gradient_checkpointing=gradient_checkpointing,
        precision=precision,
        dtype=dtype,
        save_every=save_every,
        resume=resume,
        merge=merge,
        seed=seed,
        workers=workers,
        progress=progress,
    )
    return run_training(settings, loader)


def quant_loader(plan: str) -> Loader:
    """`quant.load_model` with a 4-bit plan. Only this entry point reaches up into
    `quant/` (the composition root); library code takes the loader as an argument."""
    from quant import load_model

    def load(model_dir: str, device):
        return load_model(model_dir, plan, str(device))

    return load


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m model.train", description=__doc__.splitlines()[0])
    ap.add_argument("--phase", type=int, choices=(1, 2, 3), required=True)
    ap.add_argument("--model", required=True, help="checkpoint folder to start from")
    ap.add_argument("--data", required=True, help="JSONL manifest")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--cache", help="preprocessing cache folder (default: decode on the fly)")
    ap.add_argument("--max-steps", type=int, help="optimizer steps (overrides --epochs)")
    ap.add_argument("--epochs", type=int, help="default 1 / 1 / 3 for phase 1 / 2 / 3")
    ap.add_argument("--lr", type=float, help="peak learning rate (default 1e-3 / 1e-3 / 1e-5)")
    ap.add_argument("--batch", type=int, help="per-device batch (default 4 / 4 / 2)")
    ap.add_argument("--grad-accum", type=int, help="default: reach effective batch 256 / 256 / 128")
    ap.add_argument("--warmup-ratio", type=float, default=WARMUP_RATIO)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--lora", action="store_true", help="peft LoRA on the LLM (phase 3)")
    mode.add_argument("--qlora", action="store_true", help="LoRA on a 4-bit LLM (quant/ plan)")
    ap.add_argument("--qlora-plan", default=DEFAULT_QLORA_PLAN, help="quant/ precision plan for --qlora")
    ap.add_argument("--lora-r", type=int, default=64)
    ap.add_argument("--lora-alpha", type=int, default=16)
    ap.add_argument("--lora-dropout", type=float, default=0.05)
    ap.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    ap.add_argument("--precision", choices=("auto", "bf16", "fp16", "no"), default="auto")
    ap.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="load weights in this dtype")
    ap.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps (0: only at the end)")
    ap.add_argument("--resume", nargs="?", const="latest", default=False, help="resume from OUT's latest checkpoint or PATH")
    ap.add_argument("--no-merge", dest="merge", action="store_false", help="LoRA: keep only the adapter")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        loader = quant_loader(args.qlora_plan) if args.qlora else None
        result = train(
            phase=args.phase,
            model_dir=args.model,
            data=args.data,
            out=args.out,
            cache=args.cache,
            max_steps=args.max_steps,
            epochs=args.epochs,
            lr=args.lr,
            batch=args.batch,
            grad_accum=args.grad_accum,
            warmup_ratio=args.warmup_ratio,
            weight_decay=args.weight_decay,
            max_grad_norm=args.max_grad_norm,
            lora=args.lora,
            qlora=args.qlora,
            lora_r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            gradient_checkpointing=args.gradient_checkpointing,
            precision=args.precision,
            dtype=args.dtype,
            save_every=args.save_every,
            resume=args.resume,
            merge=args.merge,
            seed=args.seed,
            workers=args.workers,
            progress=args.progress,
            loader=loader,
        )
    except (ValueError, OSError, FloatingPointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if os.environ.get("RANK", "0") == "0":  # once, not once per process
        where = result.final if result.final is not None else result.out
        print(f"trained {result.steps} steps; model in {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
