"""The training options, declared once (`TrainSettings`): `model.train.cli` makes the
flags from its fields, `model.train.trainer` reads them. Below both, so neither imports
the other's module for them."""
from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field

from model.train.lora import LoraSettings

WARMUP_RATIO = 0.03  # fraction of all steps spent warming up (LLaVA recipes use 0.03)
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
