"""Train Omni-Emotion, one phase of paper §4.4 at a time, under `accelerate`.

    python -m model.train --phase 1|2|3 --model DIR --data MANIFEST --out DIR [--cache DIR]
    accelerate launch --config_file configs/accelerate/ddp-8gpu.yaml -m model.train --phase 3 ...

The options are declared once, as the fields of `TrainSettings`; the flags are
generated from them and `train(**options)` takes them as keywords. Defaults per phase,
exit codes (everything wrong with the inputs exits 2 before any loading and leaves
nothing in OUT) and the one-run-per-OUT lock: docs/training.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import TYPE_CHECKING

from live.contract.appendfile import OutputLocked
from live.contract.cli import EXIT_USAGE, CliError, check_out, run_main
from model.train.launch_check import process_error
from model.train.settings import TrainSettings

if TYPE_CHECKING:  # the trainer (torch, the model code) loads after the inputs are checked
    from model.checkpoint.loading import Loader
    from model.train.trainer import TrainResult


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
    from model.train.trainer import run_training

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

    from model.checkpoint.check import check_checkpoint
    from model.train.trainer import check_data

    check_processes(dict(os.environ), torch.cuda.device_count() if torch.cuda.is_available() else 0)
    check_checkpoint(s.model_dir)
    if not Path(s.data).is_file():
        raise CliError(f"{s.data}: no such manifest")
    try:
        check_data(s)
    except (ValueError, OSError) as err:
        raise CliError(err) from None
    if int(os.environ.get("RANK", "0")) == 0:  # the others would race rank 0's claim_out on OUT
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
        from model.train.trainer import claim_out

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
        from model.train.trainer import ERROR_LOG

        return checked[0] / (ERROR_LOG if rank == 0 else f"errors-rank{rank}.log") if checked else None

    return run_main(work, log=log)


if __name__ == "__main__":
    sys.exit(main())
