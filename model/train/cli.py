"""Train Omni-Emotion, one phase of paper §4.4 at a time, under `accelerate`.

    python -m model.train --phase 1|2|3 --model DIR --data MANIFEST --out DIR [--cache DIR]
    accelerate launch --config_file configs/accelerate/ddp-8gpu.yaml -m model.train --phase 3 ...

Defaults per phase (paper §4.4): what trains (`set_trainable_phase`), lr 1e-3 / 1e-3 /
1e-5, effective batch 256 / 256 / 128 (reached by gradient accumulation), epochs
1 / 1 / 3; cosine schedule with 3 % warmup. See docs/training.md.

The options are declared once, as the fields of `TrainSettings`; the flags are
generated from them and `train(**options)` takes them as keywords. Errors follow
`live.cli`: one line on stderr; a bad option value (NaN, out of range), a missing or
damaged checkpoint, manifest, cache or media file, an existing OUT without --resume or
--overwrite, an OUT another live process trains into (its lock `OUT/.lock`), or more
launched processes than GPUs exit 2 before any loading and leave nothing in OUT; a
failure while training exits 1 (its traceback in OUT/errors.log).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from live.appendfile import OutputLocked
from live.cli import EXIT_USAGE, CliError, check_out, run_main
from model.checkpoint.loading import Loader
from model.train.launch_check import process_error
from model.train.lora import LoraSettings
from model.train.trainer import ERROR_LOG, WARMUP_RATIO, TrainResult, check_data, claim_out, run_training

PRECISIONS = ("auto", "bf16", "fp16", "no")
DTYPES = ("float32", "bfloat16", "float16")
DEFAULT_QLORA_PLAN = "nf4"  # quant/ plan of the 4-bit LLM under QLoRA (QLoRA paper: NF4)


def option(default=MISSING, help: str = "", **cli):
    """A `TrainSettings` field: its default, its `--help` text and argparse extras
    (`flag=`, `choices=`, `nargs=`, `const=`, `metavar=`, `group=` for exclusive flags)."""
    meta = {"help": help, "cli": cli}
    return field(metadata=meta) if default is MISSING else field(default=default, metadata=meta)


@dataclass
class TrainSettings:
    """The training options, declared once: `train(**options)` takes these fields as
    keywords and `python -m model.train` generates its flags from them (a field `x_y`
    is `--x-y`; a bool that defaults to True is `--no-x-y`). Defaults of None mean the
    phase's paper value (`PHASE_DEFAULTS`)."""

    phase: int = option(help="1 audio projector, 2 face projector, 3 projectors + LLM", choices=(1, 2, 3))
    model_dir: str = option(help="checkpoint folder to start from (model.checkpoint.build or a phase's final)",
                            flag="--model")
    data: str = option(help="JSONL manifest; media resolve against its folder")
    out: str = option(help="output folder")
    cache: str | None = option(None, "preprocessing cache folder (default: decode on the fly)")
    max_steps: int | None = option(None, "optimizer steps to run (overrides --epochs)")
    epochs: int | None = option(None, "passes over the data (default 1 / 1 / 3 for phase 1 / 2 / 3)")
    lr: float | None = option(None, "peak learning rate (default 1e-3 / 1e-3 / 1e-5)")
    batch: int | None = option(None, "samples per device per forward pass (default 4 / 4 / 2)")
    grad_accum: int | None = option(None, "micro-batches per optimizer step (default: reach the effective "
                                          "batch 256 / 256 / 128 over all processes)")
    warmup_ratio: float = option(WARMUP_RATIO, "fraction of steps with linear warmup before the cosine decay")
    weight_decay: float = option(0.0, "AdamW weight decay")
    max_grad_norm: float = option(1.0, "gradient clipping (<= 0: none; the norm is still logged)")
    lora: bool = option(False, "peft LoRA on the LLM's attention/MLP projections (phase 3); the phase's "
                               "projectors still train in full", group="adapters")
    qlora: bool = option(False, "LoRA on a 4-bit LLM loaded through a quant/ plan (phases 1-2: a frozen "
                                "4-bit LLM, no adapters); needs a loader", group="adapters")
    qlora_plan: str = option(DEFAULT_QLORA_PLAN, "quant/ precision plan the QLoRA loader applies")
    lora_r: int = option(LoraSettings.r, "adapter rank")
    lora_alpha: int = option(LoraSettings.alpha, "adapter scale numerator (scale = alpha / r)")
    lora_dropout: float = option(LoraSettings.dropout, "dropout on the adapter input")
    gradient_checkpointing: bool = option(True, "recompute activations in backward (less memory, about 30 percent slower)")
    precision: str = option("auto", "mixed precision: auto (the launcher's setting, else bf16 on a GPU that "
                                    "has it, else fp32), bf16, fp16 or no", choices=PRECISIONS)
    dtype: str | None = option(None, "load the weights in this dtype (default: the checkpoint's)", choices=DTYPES)
    save_every: int = option(500, "checkpoint every N optimizer steps (0: only at the end)")
    resume: str | bool = option(False, "resume from OUT's latest checkpoint, or from PATH",
                                nargs="?", const="latest", metavar="PATH", group="outputs")
    overwrite: bool = option(False, "start afresh in an existing OUT: its checkpoints, final/ and logs are "
                                    "deleted first (other files are kept)", group="outputs")
    merge: bool = option(True, "LoRA / QLoRA: merge the adapter into the full-precision base as OUT/final")
    seed: int = option(0, "seeds Python, numpy, torch and the data order")
    workers: int = option(0, "DataLoader worker processes")
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self):
        if self.lora and self.qlora:
            raise ValueError("choose one of lora and qlora")
        if self.resume and self.overwrite:
            raise ValueError("choose one of resume and overwrite")
        check_numbers(self)

    @property
    def lora_settings(self) -> LoraSettings | None:
        """The adapters to train, or None (QLoRA in phases 1-2: a frozen 4-bit LLM, nothing to adapt)."""
        if self.lora or (self.qlora and self.phase == 3):
            return LoraSettings(self.lora_r, self.lora_alpha, self.lora_dropout)
        return None


# Numeric settings: (name, lowest allowed, whether the lowest itself is allowed, highest
# (exclusive) or None). None values mean "the phase's default" and are not checked.
NUMBER_RULES = (
    ("phase", 1, True, 4), ("max_steps", 1, True, None), ("epochs", 1, True, None), ("batch", 1, True, None),
    ("grad_accum", 1, True, None), ("lr", 0.0, False, None), ("warmup_ratio", 0.0, True, 1.0),
    ("weight_decay", 0.0, True, None), ("max_grad_norm", float("-inf"), False, None),
    ("lora_r", 1, True, None), ("lora_alpha", 1, True, None), ("lora_dropout", 0.0, True, 1.0),
    ("save_every", 0, True, None), ("workers", 0, True, None),
)


def check_numbers(s: TrainSettings) -> None:
    """Every numeric setting is a finite number in its range (`NUMBER_RULES`); raises
    ValueError naming the flag. NaN fails every comparison, so it is refused too."""
    for name, low, low_ok, high in NUMBER_RULES:
        value = getattr(s, name)
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{flag} must be a number, got {value!r}")
        if isinstance(low, int) and not isinstance(value, int):
            raise ValueError(f"{flag} must be a whole number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{flag} must be a finite number, got {value!r}")
        if not ((value >= low if low_ok else value > low) and (high is None or value < high)):
            span = (">= " if low_ok else "> ") + f"{low:g}" + (f" and < {high:g}" if high is not None else "")
            raise ValueError(f"{flag} must be {span}, got {value!r}")


def train(*args, loader: Loader | None = None, lock: bool = True, **options) -> TrainResult:
    """Train one phase and write checkpoints, `OUT/final`, `OUT/log.csv`, `OUT/loss.png`.

    `args` / `options`: the fields of `TrainSettings`, positionally in its order
    (`train(3, model_dir, data, out, lr=1e-5)`) or by name; `train(settings)` takes a
    ready `TrainSettings`. `loader`: `model.checkpoint.loading.Loader`, the 4-bit loader
    QLoRA needs (the CLI passes `quant.load_model`). `lock`: take OUT's lock
    (`trainer.claim_out`; False: the caller holds it).

    Returns:
        TrainResult(out, final, steps, losses, plan).

    Raises:
        ValueError: a bad setting (named), a bad sample (its id), a resume that does
            not match the checkpoint's plan.
        OutputLocked: another live process trains into OUT.
    """
    if len(args) == 1 and isinstance(args[0], TrainSettings) and not options:
        settings = args[0]
    else:
        settings = TrainSettings(*args, **options)
    if settings.qlora and loader is None:
        raise ValueError("qlora needs a 4-bit loader (the CLI uses quant.load_model)")
    return run_training(settings, loader, lock=lock)


def quant_loader() -> Loader:
    """`quant.load_model`. Only this entry point reaches up into `quant/` (the
    composition root); library code takes the loader as an argument."""
    try:
        from quant import load_model
    except ImportError as err:
        raise CliError(f"--qlora needs quant.load_model ({err})") from None
    return load_model


def _flag(f) -> str:
    name = f.metadata["cli"].get("flag", "--" + f.name.replace("_", "-"))
    return "--no-" + name[2:] if f.type in ("bool", bool) and f.default is True else name


def build_parser() -> argparse.ArgumentParser:
    """The flags, one per `TrainSettings` field."""
    ap = argparse.ArgumentParser(prog="python -m model.train", description=__doc__.splitlines()[0])
    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for f in fields(TrainSettings):
        cli = dict(f.metadata["cli"])
        cli.pop("flag", None)
        group = cli.pop("group", None)
        if group and group not in groups:
            groups[group] = ap.add_mutually_exclusive_group()
        target = groups[group] if group else ap
        kw = {"dest": f.name, "help": f.metadata["help"], **cli}
        if f.default is MISSING:
            kw.update(required=True, type=type(cli["choices"][0]) if "choices" in cli else str)
        elif f.type in ("bool", bool):
            kw.update(action="store_false" if f.default else "store_true")
        elif "nargs" not in cli:
            kw.update(default=f.default, type=_value_type(f.type))
        else:
            kw.update(default=f.default)
        if kw.get("action") == "store_false":
            kw["help"] += " (on by default; this flag turns it off)"
        elif kw.get("action") is None and f.default not in (MISSING, None, False):
            kw["help"] += f" (default: {f.default})"
        target.add_argument(_flag(f), **kw)
    return ap


def _value_type(annotation) -> type:
    text = str(annotation)
    return int if text.startswith("int") else float if text.startswith("float") else str


def check_processes(env: dict[str, str], cuda_devices: int) -> None:
    """The launch rule (`launch_check.process_error`) with torch's GPU count; raises
    CliError. (`python -m model.train` checks it once before importing anything heavy.)"""
    message = process_error(env, cuda_devices)
    if message is not None:
        raise CliError(message)


def _check_inputs(s: TrainSettings) -> None:
    """Inputs and outputs that can be checked before anything loads (exit 2, not
    minutes later)."""
    import torch

    from model.checkpoint.loading import check_checkpoint

    check_processes(dict(os.environ), torch.cuda.device_count() if torch.cuda.is_available() else 0)
    check_checkpoint(s.model_dir)
    if not Path(s.data).is_file():
        raise CliError(f"{s.data}: no such manifest")
    try:
        check_data(s)
    except (ValueError, OSError) as err:
        raise CliError(err) from None
    check_out(s.out, s.overwrite, resume=bool(s.resume))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    checked: list[Path] = []  # OUT once it is known to be ours: the traceback log goes there

    def work() -> None:
        try:
            try:
                settings = TrainSettings(**vars(args))
            except ValueError as err:
                raise CliError(err) from None
            _check_inputs(settings)
            loader = quant_loader() if settings.qlora else None
        except CliError:
            if rank != 0:  # every process finds the same; the main one reports it
                raise SystemExit(EXIT_USAGE) from None
            raise
        lock = None
        if rank == 0:  # one writer per OUT: a second run on it is refused here, before loading
            try:
                lock = claim_out(settings.out)
            except OutputLocked as err:
                raise CliError(err) from None
        checked.append(Path(settings.out))
        try:
            result = train(settings, loader=loader, lock=False)
        finally:
            if lock is not None:
                lock.release()
        if rank == 0:  # once, not once per process
            where = result.final if result.final is not None else result.out
            print(f"trained {result.steps} steps; model in {where}")

    def log() -> Path | None:
        return checked[0] / (ERROR_LOG if rank == 0 else f"errors-rank{rank}.log") if checked else None

    return run_main(work, log=log)


if __name__ == "__main__":
    sys.exit(main())
