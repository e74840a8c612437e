"""LoRA / QLoRA for one consumer GPU (peft), and merging the result back into a full model.

Phase 3 with LoRA: the decoder stays frozen and low-rank adapters on its attention
and MLP projections train, while the phase's own non-LLM parts train in full; phases 1
and 2 get no adapters (``--qlora`` there only means a frozen 4-bit LLM). An adapter
checkpoint is ``adapter/`` + ``trainable.safetensors`` + config and tokenizer files;
``merge_checkpoint(base, ckpt, out)`` turns it into a normal model. docs/training.md
"LoRA and QLoRA".
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and the model code load when a function runs: `python -m model.train`
    import torch   # checks its inputs first (settings.py imports LoraSettings from here)
    from torch import nn

# Decoder projections LoRA adapts (Qwen2 names), only inside the language model.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LLM_PREFIXES = ("model.language_model", "lm_head")
ADAPTER_DIR = "adapter"
TRAINABLE_FILE = "trainable.safetensors"
PEFT_PREFIX = "base_model.model."  # what peft puts before the wrapped model's names


@dataclass
class LoraSettings:
    """r: adapter rank; alpha: scaling numerator (update scale = alpha / r);
    dropout: on the adapter input."""

    r: int = 64
    alpha: int = 16
    dropout: float = 0.05

    def __post_init__(self):
        if self.r < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")


def target_regex() -> str:
    """peft `target_modules` regex: the decoder's projections, never the vision or
    audio towers (SigLIP and Whisper have q/k/v/out projections too)."""
    return rf".*model\.language_model\..*\.({'|'.join(LORA_TARGETS)})"


def non_llm_prefixes(phase: int) -> tuple[str, ...]:
    """The phase's trainable modules outside the LLM (they train in full under LoRA)."""
    from model.net.modeling import PHASE_TRAINABLE

    return tuple(p for p in PHASE_TRAINABLE[phase] if p not in LLM_PREFIXES)


def clean_name(name: str) -> str:
    """A parameter name without peft's wrapper prefix."""
    return name[len(PEFT_PREFIX) :] if name.startswith(PEFT_PREFIX) else name


def apply_lora(model: nn.Module, phase: int, settings: LoraSettings | None) -> nn.Module:
    """Freeze `model`, add LoRA adapters to the decoder when the phase trains it, and
    unfreeze the phase's non-LLM parts. Returns the model to train (a `PeftModel`
    when adapters were added). `settings=None` adds no adapters (phases 1-2, QLoRA).

    Trainable parameters are cast to float32: a 4-bit loader may hand back bf16/fp16
    projectors, and Adam on half-precision master weights loses small updates.
    """
    import torch

    from model.net.modeling import PHASE_TRAINABLE

    model.requires_grad_(False)
    if settings is not None and any(p in LLM_PREFIXES for p in PHASE_TRAINABLE[phase]):
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=settings.r,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=target_regex(),
            bias="none",
        )
        model = get_peft_model(model, config)
    elif settings is not None:
        raise ValueError(f"phase {phase} does not train the LLM, so LoRA has nothing to adapt; drop --lora")
    prefixes = non_llm_prefixes(phase)
    for name, param in model.named_parameters():
        clean = clean_name(name)
        if "lora_" in name or any(clean == p or clean.startswith(p + ".") for p in prefixes):
            if param.dtype != torch.float32:
                param.data = param.data.float()
            param.requires_grad_(True)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"phase {phase}: nothing to train after applying LoRA")
    return model


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "peft_config")


def save_adapter(model: nn.Module, out: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write the adapter checkpoint (see module docstring) into `out`.

    state_dict: the full model state (e.g. gathered by `accelerator.get_state_dict`
    under FSDP); None reads it from `model`.
    """
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    state = state_dict if state_dict is not None else model.state_dict()
    extra = {clean_name(n): t.detach().cpu().contiguous() for n, t in state.items() if n in trainable and "lora_" not in n}
    save_file(extra, out / TRAINABLE_FILE)
    if is_peft(model):
        lora_state = {n: t for n, t in state.items() if "lora_" in n}
        model.save_pretrained(out / ADAPTER_DIR, state_dict=lora_state)
    return out


def load_trainable(model: nn.Module, path: str | Path) -> list[str]:
    """Load `trainable.safetensors` into a plain (non-peft) model; every key must exist."""
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    own = dict(model.named_parameters())
    unknown = sorted(set(tensors) - set(own))
    if unknown:
        raise ValueError(f"{path}: parameters {unknown[:5]} are not in the model")
    with torch.no_grad():
        for name, value in tensors.items():
            own[name].copy_(value.to(own[name].dtype))
    return sorted(tensors)


def merge_checkpoint(base: str | Path, ckpt: str | Path, out: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Full-precision base model + adapter checkpoint → a merged `save_pretrained`
    model in `out` (loads on the CPU: QLoRA adapters merge into the unquantized base).
    """
    from model.checkpoint import loading

    ckpt = Path(ckpt)
    if not (ckpt / TRAINABLE_FILE).is_file():
        raise FileNotFoundError(f"{ckpt} is not an adapter checkpoint ({TRAINABLE_FILE} missing)")
    model, processor = loading.load(base, dtype=dtype)
    load_trainable(model, ckpt / TRAINABLE_FILE)
    if (ckpt / ADAPTER_DIR).is_dir():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, ckpt / ADAPTER_DIR).merge_and_unload()
    return loading.save(model, processor, out)
