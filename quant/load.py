"""`load_model(path, plan, device)`: a checkpoint loaded with a quantization plan.

Quantization is a load-time transform with an explicit skip list (litgpt-style):

1. The plan is resolved against the model's layout on the meta device: which
   `nn.Linear` gets which precision (`quant.layout.quant_targets`).
2. A plan that uses bitsandbytes only: the precision covering the most weights
   ("primary") is applied by transformers while it reads the checkpoint
   (`BitsAndBytesConfig`), so the float weights are streamed and never held whole on
   the device. Every module NOT converted to it is listed in `llm_int8_skip_modules` —
   including `lm_head`, which transformers would otherwise stop excluding as soon as
   any skip list is given. A plan with another method (HQQ, torchao) has no primary:
   the float checkpoint is read into host memory instead.
3. Every other target is converted directly by its method (`quant.convert`,
   `quant.methods`), straight onto the device, one layer at a time; then the float
   tensors still in host memory follow (so a CUDA card never holds the whole float
   model).
4. Float tensors are cast to the plan's float dtype (a no-op unless transformers left
   one behind, e.g. a bias it did not cast).
5. Host embeddings (`embeddings="host"`): the input embedding table moves to host
   memory behind a `quant.placement.HostEmbedding` (pinned where CUDA exists). A model
   whose lm_head is tied to the table is refused before anything loads
   (`quant.layout.check_placement`). The table is read onto the device with the rest
   and moved right after, so loading briefly holds it there (see docs/quantization.md).
6. The result is checked: every target is its method's layer at its precision and
   nothing else is quantized. A mismatch raises instead of returning a silently wrong
   model. A method without a kernel for the device (torchao int4 on a CPU) is refused
   before anything loads (`PlanLoadError`).

`model/` never imports a quantization library; only this package does, and only when a
plan quantizes something.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from .estimate import meta_model, torch_dtype
from .layout import (
    effective_precisions,
    is_tied,
    primary_precision,
    quant_targets,
    skip_modules,
    slot_of,
    unsupported_layers,
)
from .plans import FLOAT_PRECISIONS, QuantPlan, get_plan
# bitsandbytes 0.50 re-packs a 4-bit weight on its first CPU forward when the CPU has
# AVX512-BF16: it undoes double quantization (absmax → bf16 per block) and crashes on
# layers whose in_features is not a multiple of 64 (the tiny model's 32-wide vision
# tower). Off, a CPU run keeps exactly the plan's storage format, the one a GPU runs.
CPU_REPACK_4BIT = False


class PlanLoadError(ValueError, RuntimeError):
    """A plan cannot be applied here (a device that is not available, a method without
    a kernel for it, a KV cache backend that is not installed). A ValueError too, so
    command lines that report bad input as one line (`live.run --plan`) do so here."""


def bnb_config(plan: QuantPlan, primary: str, skip: list[str]):
    """transformers' BitsAndBytesConfig for the primary precision, with the full skip list."""
    from transformers import BitsAndBytesConfig

    from .methods.bnb import storage_dtype

    common = dict(llm_int8_skip_modules=list(skip), llm_int8_threshold=plan.int8_threshold)
    if primary == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, **common)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=primary,
        bnb_4bit_compute_dtype=torch_dtype(plan.compute_dtype),
        bnb_4bit_use_double_quant=plan.double_quant,
        bnb_4bit_quant_storage=storage_dtype(plan.quant_storage),
        **common,
    )


def _check_device(device: str, plan: QuantPlan) -> str:
    """The device rule of every CLI (`live.contract.cli.resolve_device`: "auto", cpu, cuda[:N]
    checked against the machine), then the plan's methods' kernels
    (`quant.methods.device_refusal`), as a PlanLoadError naming the plan."""
    from live.contract.cli import CliError, resolve_device

    from .methods import device_refusal

    try:
        device = resolve_device(device)
    except CliError as err:
        raise PlanLoadError(f"plan {plan.name!r}: {err}") from None
    refusal = device_refusal(plan, device)
    if refusal:
        raise PlanLoadError(refusal)
    return device


def _plain(p: torch.Tensor) -> bool:
    """A parameter holding plain float data (not a bitsandbytes or torchao subclass)."""
    return type(p) is nn.Parameter and type(p.data) is torch.Tensor and p.is_floating_point()


def cast_float_tensors(model: nn.Module, precisions: dict[str, str], compute_dtype: str) -> None:
    """Float parameters → their slot's dtype (quantized slots: `compute_dtype`).

    Parameter by parameter, never `module.to(dtype)`: that would turn packed 4-bit
    uint8 storage into floats. Buffers keep the dtype the model gave them (RoPE
    frequencies stay fp32 on purpose)."""
    for name, p in model.named_parameters():
        if not _plain(p):
            continue
        precision = precisions[slot_of(name)]
        want = torch_dtype(precision if precision in FLOAT_PRECISIONS else compute_dtype)
        if p.dtype != want:
            p.data = p.data.to(want)


def move_rest(model: nn.Module, device: str) -> None:
    """Plain parameters and buffers still elsewhere → `device`, tensor by tensor
    (converted layers are already there; HQQLinear ignores `.to()`)."""
    target = torch.device(device)
    for _, p in model.named_parameters():
        if type(p) is nn.Parameter and p.device != target:
            p.data = p.data.to(target)
    for module in model.modules():
        for key, b in module._buffers.items():
            if b is not None and b.device != target:
                module._buffers[key] = b.to(target)


def check_quantized(model: nn.Module, targets: dict[str, str]) -> None:
    """Every target is its method's layer at its precision and nothing else is quantized."""
    from .methods import is_quantized, method_of

    wrong = []
    for name, module in model.named_modules():
        kind = type(module).__name__
        if name in targets:
            if not method_of(targets[name]).is_layer(module, targets[name]):
                wrong.append(f"{name}: {kind}, wanted {targets[name]}")
        elif is_quantized(module):
            wrong.append(f"{name}: {kind}, wanted float")
    if wrong:
        raise RuntimeError(f"quantization plan applied wrongly ({len(wrong)} modules): " + "; ".join(wrong[:5]))


def resolve(config, plan: QuantPlan) -> dict:
    """What `load_model` will do with `plan` on a model of `config` (no weights read):
    {"targets", "primary", "skip", "precisions", "load_dtype", "unsupported"}."""
    meta = meta_model(config, plan)
    tied = is_tied(meta)
    targets = quant_targets(meta, plan)
    primary = primary_precision(meta, targets)
    precisions = effective_precisions(plan, tied)
    return {
        "targets": targets,
        "primary": primary,
        "skip": skip_modules(plan, precisions, primary) if primary else [],
        "precisions": precisions,
        "load_dtype": plan.float_dtype,
        "unsupported": unsupported_layers(meta, plan),
    }


def load_model(path: str | Path, plan: str | QuantPlan = "fp16", device: str = "cpu"):
    """(model, processor) from a checkpoint folder with `plan` applied on `device`.

    `plan`: a `QuantPlan`, a name of `quant.plans.PLANS`, or `NAME+key=value...`.
    The plan and the resolved layout are attached as `model.quant_plan` and
    `model.quant_layout`. Raises ValueError for a bad plan, FileNotFoundError for a
    missing checkpoint, PlanLoadError when the device cannot run the plan,
    `quant.layout.PlacementError` (a ValueError) for host embeddings with a tied head.
    """
    from model.checkpoint.check import check_checkpoint
    from model.checkpoint.loading import load
    from model.net.config import OmniEmotionConfig

    plan = get_plan(plan)
    path = check_checkpoint(path)
    device = _check_device(device, plan)
    layout = resolve(OmniEmotionConfig.from_pretrained(path), plan)
    from .kv_cache import available, parse

    kv = parse(plan.kv_cache)
    why = available(kv[0]) if kv else None
    if why:  # a KV cache backend that is not installed (quanto): refused before loading
        raise PlanLoadError(f"plan {plan.name!r}: {why}")
    dtype = torch_dtype(layout["load_dtype"])
    primary = layout["primary"]
    direct_path = primary is None and bool(layout["targets"])  # HQQ/torchao: read into host memory first
    if primary is None:
        model, processor = load(path, dtype=dtype, device="cpu" if direct_path else device)
    else:
        qconfig = bnb_config(plan, primary, layout["skip"])
        model, processor = load(path, dtype=dtype, quantization_config=qconfig, device_map={"": device})
    secondary = {n: p for n, p in layout["targets"].items() if p != primary}
    t0 = time.perf_counter()
    if secondary:
        from .convert import convert_linears

        convert_linears(model, secondary, plan, device)
    if direct_path:
        move_rest(model, device)
    model.quant_seconds = time.perf_counter() - t0  # direct conversion (the transformers pass is in its load)
    cast_float_tensors(model, layout["precisions"], plan.compute_dtype)
    if plan.host_embeddings:
        from .placement import embeddings_to_host

        embeddings_to_host(model)
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()  # give the table's device copy back to the card
    if torch.device(device).type == "cpu" and not CPU_REPACK_4BIT:
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    check_quantized(model, layout["targets"])
    from .kv_cache import apply as apply_kv_cache

    apply_kv_cache(model, plan)
    model.quant_plan = plan
    model.quant_layout = layout
    return model.eval(), processor
