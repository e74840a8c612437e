"""The training loop of paper §4.4 on `accelerate`: plan, loop, checkpoints, resume.

One `Accelerator` does the distribution (single GPU, DDP, FSDP — whatever
`accelerate launch` was configured with), gradient accumulation, mixed precision and
the resumable state (model's trainable weights, optimizer, scheduler, RNG, sampler).

OUT layout:

    OUT/checkpoint-{step}/          every `save_every` optimizer steps
        config.json, model.safetensors, tokenizer + processor files   (full training)
        or trainable.safetensors + adapter/ + config/tokenizer files  (LoRA / QLoRA)
        trainer_state.json          step, epoch, plan (human-readable)
        accelerate/                 `Accelerator.save_state` (what `--resume` loads)
    OUT/final/                      the trained model, `save_pretrained` format
    OUT/final-adapter/              LoRA / QLoRA only: the adapter `final/` was merged from
    OUT/log.csv, OUT/loss.png       see `model/train/log.py`
    OUT/errors.log                  tracebacks of a failure (the terminal gets one line)

Only the main process creates folders and writes checkpoints, logs and final/; the
others write only their own shards and RNG state (`Accelerator.save_state`) and wait at
a barrier before the main process renames a checkpoint into place.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader

from live.contract.appendfile import OutputLock
from model.net import tokens
from model.train.collator import TrainCollator
from model.data.manifest import read_manifest
from model.train.dataset import TrainDataset, check_media
from model.train.lora import apply_lora, merge_checkpoint, save_adapter
from model.train.log import CsvLog, LogRow, plot_loss

if TYPE_CHECKING:  # the options are declared with the command line
    from model.checkpoint.loading import Loader
    from model.train.settings import TrainSettings


@dataclass(frozen=True)
class PhaseDefaults:
    """lr: peak learning rate; effective_batch: samples per optimizer step over all
    processes; epochs: passes over the data; batch: samples per device per forward."""

    lr: float
    effective_batch: int
    epochs: int
    batch: int


# Paper §4.4. Per-device batch sizes are ours (fit a 24 GB GPU with a 4-bit 7B LLM).
PHASE_DEFAULTS = {
    1: PhaseDefaults(lr=1e-3, effective_batch=256, epochs=1, batch=4),
    2: PhaseDefaults(lr=1e-3, effective_batch=256, epochs=1, batch=4),
    3: PhaseDefaults(lr=1e-5, effective_batch=128, epochs=3, batch=2),
}
ADAM_BETAS = (0.9, 0.999)
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"
ACCEL_DIR = "accelerate"
ERROR_LOG = "errors.log"  # full tracebacks of a failed run (the main process's; others add -rankN)
# What a run writes into OUT: `--overwrite` deletes these, and only these, first.
OUTPUTS = ("checkpoint-*", "final", "final-adapter", "log.csv", "loss.png", "errors*.log")

@dataclass
class TrainPlan:
    """The numbers a run is held to; a resumed run must have the same plan."""

    phase: int
    lr: float
    batch: int
    grad_accum: int
    num_processes: int
    effective_batch: int
    epochs: int
    batches_per_epoch: int  # per process
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int

    def describe(self) -> str:
        return (
            f"phase {self.phase}: lr {self.lr:g}, batch {self.batch} × grad_accum {self.grad_accum} × "
            f"{self.num_processes} process(es) = effective batch {self.effective_batch}; "
            f"{self.steps_per_epoch} steps/epoch, {self.total_steps} steps "
            f"({self.total_steps / self.steps_per_epoch:.2f} epochs), warmup {self.warmup_steps}"
        )


def derive_grad_accum(effective_batch: int, batch: int, num_processes: int) -> int:
    """Accumulation steps that reach `effective_batch` (rounded up, at least 1)."""
    if batch < 1 or num_processes < 1:
        raise ValueError(f"batch={batch} and num_processes={num_processes} must be >= 1")
    return max(1, math.ceil(effective_batch / (batch * num_processes)))


def make_plan(s: TrainSettings, num_processes: int, batches_per_epoch: int, grad_accum: int) -> TrainPlan:
    d = PHASE_DEFAULTS[s.phase]
    batch = s.batch or d.batch
    steps_per_epoch = math.ceil(batches_per_epoch / grad_accum)  # the last partial one steps too
    epochs = s.epochs or d.epochs
    total = s.max_steps if s.max_steps is not None else epochs * steps_per_epoch
    return TrainPlan(
        phase=s.phase,
        lr=s.lr if s.lr is not None else d.lr,
        batch=batch,
        grad_accum=grad_accum,
        num_processes=num_processes,
        effective_batch=batch * grad_accum * num_processes,
        epochs=math.ceil(total / steps_per_epoch),
        batches_per_epoch=batches_per_epoch,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        warmup_steps=int(round(s.warmup_ratio * total)),
    )


@dataclass
class TrainerState:
    """Position in the run; checkpointed through `register_for_checkpointing`.
    batches_done counts this process's batches of the current epoch."""

    step: int = 0
    epoch: int = 0
    batches_done: int = 0
    plan: dict = field(default_factory=dict)
    data_ids_hash: int = 0

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)


@dataclass
class TrainResult:
    out: Path
    final: Path | None
    steps: int
    losses: list[float]  # per optimizer step, this invocation only
    plan: TrainPlan


def clear_outputs(out: Path) -> None:
    """Delete what a run writes into `out` (`OUTPUTS`), nothing else (`--overwrite`)."""
    for pattern in OUTPUTS:
        for p in out.glob(pattern):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def latest_checkpoint(out: str | Path) -> Path | None:
    """The highest-step complete checkpoint in `out` (None when there is none)."""
    found = [(int(m.group(1)), p) for p in Path(out).glob("checkpoint-*")
             if (m := CHECKPOINT_RE.match(p.name)) and (p / STATE_FILE).is_file() and (p / ACCEL_DIR).is_dir()]
    return max(found, key=lambda f: f[0])[1] if found else None


def resolve_resume(resume: str | bool, out: str | Path) -> Path | None:
    if resume is False or resume is None:
        return None
    if resume is True or resume == "latest":
        ckpt = latest_checkpoint(out)
        if ckpt is None:
            raise ValueError(f"--resume: no checkpoint in {out}")
        return ckpt
    ckpt = Path(resume)
    if not (ckpt / ACCEL_DIR).is_dir() or not (ckpt / STATE_FILE).is_file():
        raise ValueError(f"--resume {ckpt}: not a checkpoint folder (needs {STATE_FILE} and {ACCEL_DIR}/)")
    return ckpt


def mixed_precision(precision: str, quantized: bool = False) -> str | None:
    """`auto`: what `accelerate launch` was configured with, else bf16 on a GPU that
    supports it, else full precision. None lets the launcher's choice stand.

    On a GPU, a quantized (QLoRA) model always gets autocast: its frozen parts are
    16-bit while the trained projectors are float32 master weights. (CPU autocast
    cannot run fp16 LayerNorms, so the CPU stays in full precision.)"""
    if precision not in ("auto", "bf16", "fp16", "no"):
        raise ValueError(f"precision must be auto, bf16, fp16 or no, got {precision!r}")
    if precision != "auto":
        return precision
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return None
    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp16" if quantized else "no"
    return "no"


def _trainable_only_hooks(accelerator) -> None:
    """Keep only trainable weights in the resume state. Phases 1-2 train a few million
    of 8 billion parameters; the frozen rest is in the model folder already."""
    from safetensors import safe_open

    def save_hook(models, weights, output_dir):
        for model, state in zip(models, weights):
            keep = {n for n, p in model.named_parameters() if p.requires_grad}
            for name in [n for n in state if n not in keep]:
                del state[name]

    def load_hook(models, input_dir):
        for i, model in enumerate(models):
            path = Path(input_dir) / (f"model_{i}.safetensors" if i else "model.safetensors")
            if not path.is_file():
                continue
            with safe_open(str(path), "pt") as f:
                saved = set(f.keys())
            want = {n for n, p in model.named_parameters() if p.requires_grad}
            if saved != want:
                missing, extra = sorted(want - saved)[:3], sorted(saved - want)[:3]
                raise ValueError(
                    f"{input_dir}: checkpoint trains different parameters (missing {missing}, unexpected {extra}); "
                    "resume with the same phase and --lora/--qlora settings"
                )

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def _accelerator(s: TrainSettings, grad_accum: int):
    """The run's `Accelerator`: seedable sampler, mixed precision (`mixed_precision`)."""
    from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs

    return Accelerator(
        gradient_accumulation_steps=grad_accum,
        mixed_precision=mixed_precision(s.precision, s.qlora),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=s.seed),
        # Phase 3 batches may lack audio (or faces): those projectors then get no grad.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=s.phase == 3)],
        step_scheduler_with_optimizer=False,
    )


def _trainable_model(s: TrainSettings, loader: Loader | None, device: torch.device):
    """(model, processor) in train mode, LoRA or the phase's parameters trainable: QLoRA
    loads through the 4-bit `loader`, else the checkpoint as saved (in `s.dtype` if given)."""
    if s.qlora:
        if loader is None:
            raise ValueError("qlora needs a 4-bit loader (the CLI passes quant.load_model)")
        model, processor = loader(s.model_dir, s.qlora_plan, str(device))
    else:
        from model.checkpoint import loading

        model, processor = loading.load(s.model_dir, dtype=getattr(torch, s.dtype) if s.dtype else None,
                                        device=str(device))
    if s.lora or s.qlora:
        model = apply_lora(model, s.phase, s.lora_settings)
    else:
        model.set_trainable_phase(s.phase)
    if s.gradient_checkpointing:
        # Non-reentrant checkpointing needs no input that requires grad, so drop the
        # hooks transformers adds to every tower's input embeddings: they would force
        # backward through the frozen vision/audio/face towers (and Swin's patch
        # embedding returns a tuple, which the hook cannot handle).
        model.activation_checkpointing_enable({"use_reentrant": False})
        model.disable_input_require_grads()
    model.train()
    return model, processor


def check_data(s: TrainSettings) -> list[dict]:
    """The manifest's samples, validated, with every file they need present (the cache
    folder and its ``.npz`` files, or the media). Raises ValueError (ManifestError,
    SampleError) or FileNotFoundError naming the file; nothing is decoded or loaded."""
    manifest = Path(s.data)
    samples = read_manifest(manifest)
    if not samples:
        raise ValueError(f"{manifest}: the manifest has no samples")
    if s.cache is not None and not Path(s.cache).is_dir():
        raise FileNotFoundError(f"cache folder {s.cache} does not exist; run the preprocessing first")
    check_media(samples, manifest.parent, s.cache)
    return samples


class Trainer:
    """One training run. `run()` does everything; the pieces are methods for tests."""

    def __init__(self, settings: TrainSettings, loader: Loader | None = None):
        from accelerate.utils import set_seed

        s = self.s = settings  # its numbers are checked when it is made (TrainSettings)
        self.out = Path(s.out)
        self.resume_from = resolve_resume(s.resume, self.out)
        d = PHASE_DEFAULTS[s.phase]
        batch = s.batch or d.batch

        # Accumulation must be fixed before the Accelerator exists; the process count
        # comes from the launcher's environment (WORLD_SIZE), as accelerate reads it.
        world = int(os.environ.get("WORLD_SIZE", "1"))
        self.grad_accum = s.grad_accum or derive_grad_accum(d.effective_batch, batch, world)
        self.accelerator = acc = _accelerator(s, self.grad_accum)
        set_seed(s.seed)
        self.main = acc.is_main_process

        # Read the data first: a bad manifest or cache fails before minutes of loading.
        samples = check_data(s)

        model, self.processor = _trainable_model(s, loader, acc.device)
        self.adapter_mode = s.lora or s.qlora

        self.dataset = TrainDataset(
            samples, s.phase, cache_dir=s.cache, base_dir=Path(s.data).parent,
            max_audio_samples=tokens.audio_window_samples(self.processor.config),
        )
        dataloader = DataLoader(self.dataset, batch_size=batch, shuffle=True, collate_fn=TrainCollator(self.processor),
                                num_workers=s.workers, persistent_workers=s.workers > 0)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                      lr=s.lr if s.lr is not None else d.lr, betas=ADAM_BETAS, weight_decay=s.weight_decay)
        self.model, self.optimizer, self.dataloader = acc.prepare(model, optimizer, dataloader)
        # FSDP swaps parameters for sharded ones: clip what the optimizer now holds.
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.plan = make_plan(s, acc.num_processes, len(self.dataloader), self.grad_accum)
        from transformers import get_cosine_schedule_with_warmup

        # Stepped by us once per optimizer step (not through prepare(), which would
        # step it once per process).
        self.scheduler = get_cosine_schedule_with_warmup(optimizer, self.plan.warmup_steps, self.plan.total_steps)
        self.state = TrainerState(plan=asdict(self.plan), data_ids_hash=zlib.crc32("\n".join(self.dataset.ids).encode()))
        acc.register_for_checkpointing(self.scheduler, self.state)
        _trainable_only_hooks(acc)

    # ---- checkpoints -------------------------------------------------------------------

    def _save_model(self, folder: Path) -> None:
        """The model in `save_pretrained` format (full) or as an adapter checkpoint."""
        acc = self.accelerator
        state = acc.get_state_dict(self.model)  # gathers shards under FSDP / DeepSpeed
        unwrapped = acc.unwrap_model(self.model)
        if self.adapter_mode:
            if self.main:
                save_adapter(unwrapped, folder, state)
                self.processor.save_pretrained(folder)
                self.processor.config.save_pretrained(folder)
        elif self.main:  # the state dict is gathered above (collective); writing is the main's
            unwrapped.save_pretrained(folder, state_dict=state, save_function=acc.save)
            self.processor.save_pretrained(folder)

    def save_checkpoint(self) -> Path:
        acc, step = self.accelerator, self.state.step
        final = self.out / f"checkpoint-{step}"
        tmp = self.out / f"checkpoint-{step}.tmp"
        if self.main:
            if tmp.exists():
                shutil.rmtree(tmp)
            (tmp / ACCEL_DIR).mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp / ACCEL_DIR))
        self._save_model(tmp)
        acc.wait_for_everyone()  # every process's RNG state / shard is in tmp before it moves
        if self.main:
            (tmp / STATE_FILE).write_text(json.dumps(self.state.state_dict(), indent=2))
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)  # a checkpoint folder is complete or absent
            plot_loss(self.out / "log.csv", self.out / "loss.png")
        acc.wait_for_everyone()
        return final

    def _resume(self) -> None:
        ckpt = self.resume_from
        plan_now, ids_now = dict(self.state.plan), self.state.data_ids_hash
        self.accelerator.load_state(str(ckpt / ACCEL_DIR), strict=False)
        if self.state.plan != plan_now:
            diff = {k: (self.state.plan.get(k), v) for k, v in plan_now.items() if self.state.plan.get(k) != v}
            raise ValueError(f"cannot resume {ckpt}: the plan changed (saved, now): {diff}")
        if self.state.data_ids_hash != ids_now:
            raise ValueError(f"cannot resume {ckpt}: the manifest's samples changed")
        self.accelerator.print(f"resumed from {ckpt} at step {self.state.step} (epoch {self.state.epoch})")

    # ---- the loop ----------------------------------------------------------------------

    def _open_run(self) -> CsvLog | None:
        """OUT cleared (`--overwrite`) and made, the plan printed, a checkpoint resumed;
        returns the log (the main process's; None elsewhere)."""
        if self.main:
            if self.s.overwrite:
                clear_outputs(self.out)
            self.out.mkdir(parents=True, exist_ok=True)
        self.accelerator.wait_for_everyone()
        self.accelerator.print(self.plan.describe())
        if self.resume_from is not None:
            self._resume()
        return CsvLog(self.out / "log.csv", resume_step=self.state.step) if self.main else None

    def run(self) -> TrainResult:
        from tqdm.auto import tqdm

        acc, plan, state = self.accelerator, self.plan, self.state
        log = self._open_run()
        start = time.monotonic() - (log.offset_seconds if log else 0.0)
        bar = tqdm(total=plan.total_steps, initial=state.step, disable=not (self.main and self.s.progress), unit="step")
        max_norm = self.s.max_grad_norm if self.s.max_grad_norm > 0 else float("inf")
        losses, micro, grad_norm = [], [], None
        while state.step < plan.total_steps:
            self.dataloader.set_epoch(state.epoch)
            batches = self.dataloader
            if state.batches_done:
                batches = acc.skip_first_batches(self.dataloader, state.batches_done)
            for batch in batches:
                with acc.accumulate(self.model):
                    loss = self.model(**batch, use_cache=False).loss
                    acc.backward(loss)
                    micro.append(loss.detach().float())
                    if acc.sync_gradients:
                        grad_norm = acc.clip_grad_norm_(self.trainable, max_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                state.batches_done += 1
                if not acc.sync_gradients:
                    continue
                lr = self.scheduler.get_last_lr()[0]  # the rate this step used
                self.scheduler.step()
                state.step += 1
                step_epoch = state.epoch  # the epoch this step belongs to, for the log
                if state.batches_done >= plan.batches_per_epoch:
                    state.epoch, state.batches_done = state.epoch + 1, 0
                step_loss = acc.reduce(torch.stack(micro).mean(), reduction="mean").item()
                micro = []
                if not math.isfinite(step_loss):
                    raise FloatingPointError(f"loss is {step_loss} at step {state.step}; lower --lr")
                losses.append(step_loss)
                if log:
                    norm = float(grad_norm) if grad_norm is not None else float("nan")
                    log.append(LogRow(state.step, step_loss, lr, norm, time.monotonic() - start, step_epoch))
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
                if self.s.save_every and state.step % self.s.save_every == 0 and state.step < plan.total_steps:
                    self.save_checkpoint()
                if state.step >= plan.total_steps:
                    break
        bar.close()
        self.save_checkpoint()  # the last state, resumable like any other
        final = self._save_final()
        if log:
            log.close()
            plot_loss(self.out / "log.csv", self.out / "loss.png")
        acc.wait_for_everyone()
        acc.end_training()
        return TrainResult(self.out, final, state.step, losses, plan)

    def _save_final(self) -> Path | None:
        final = self.out / "final"
        if not self.adapter_mode:
            self._save_model(final)
            return final
        adapter = self.out / "final-adapter"
        self._save_model(adapter)
        if not self.s.merge:
            return None
        if self.main:
            # QLoRA's base is 4-bit here; merge into the full-precision model folder.
            merge_checkpoint(self.s.model_dir, adapter, final)
        self.accelerator.wait_for_everyone()
        return final


def claim_out(out: str | Path) -> OutputLock:
    """`out` created and locked for this run (``OUT/.lock`` names this process): one
    writer per output folder. A lock left by a dead run is taken over with a note.
    Raises `OutputLocked` when another live process trains into `out` (naming it)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return OutputLock(out).acquire()


def run_training(settings: TrainSettings, loader: Loader | None = None, lock: bool = True) -> TrainResult:
    """Train; `lock`: take `claim_out` on OUT first (in the main process; False when
    the caller already holds it)."""
    main = int(os.environ.get("RANK", "0")) == 0  # the launcher's rank; no Accelerator yet
    held = claim_out(settings.out) if lock and main else None
    try:
        return Trainer(settings, loader).run()
    finally:
        sys.stdout.flush()
        if held is not None:
            held.release()
