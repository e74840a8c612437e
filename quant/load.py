"""`load_model(path, plan, device)`: a checkpoint loaded with a quantization plan.

Quantization is a load-time transform with an explicit skip list (litgpt-style):

1. The plan is resolved against the model's layout on the meta device: which
   `nn.Linear` gets which precision (`quant.layout.quant_targets`).
2. The precision covering the most weights ("primary") is applied by transformers while
   it reads the checkpoint (`BitsAndBytesConfig`), so the float weights are streamed and
   never held whole on the device. Every module NOT converted to it is listed in
   `llm_int8_skip_modules` — including `lm_head`, which transformers would otherwise
   stop excluding as soon as any skip list is given.
3. Layers of a second quantized precision (e.g. `edge-8gb`'s int8 `lm_head`) are
   converted directly with bitsandbytes (`quant.convert`).
4. Float tensors are cast to the plan's float dtype (a no-op unless transformers left
   one behind, e.g. a bias it did not cast).
5. Host embeddings (`embeddings="host"`): the input embedding table moves to host
   memory behind a `quant.placement.HostEmbedding` (pinned where CUDA exists). A model
   whose lm_head is tied to the table is refused before anything loads
   (`quant.layout.check_placement`). The table is read onto the device with the rest
   and moved right after, so loading briefly holds it there (see docs/quantization.md).
6. The result is checked: every target has the right bitsandbytes type and nothing
   else is quantized. A mismatch raises instead of returning a silently wrong model.

`model/` never imports bitsandbytes; only this package does, and only when a plan
quantizes something.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .estimate import meta_model, torch_dtype
from .layout import effective_precisions, is_tied, primary_precision, quant_targets, skip_modules, slot_of
from .plans import FLOAT_PRECISIONS, QuantPlan, get_plan

BNB_TYPE_NAMES = {"int8": "Linear8bitLt", "nf4": "Linear4bit", "fp4": "Linear4bit"}
# bitsandbytes 0.50 re-packs a 4-bit weight on its first CPU forward when the CPU has
# AVX512-BF16: it undoes double quantization (absmax → bf16 per block) and crashes on
# layers whose in_features is not a multiple of 64 (the tiny model's 32-wide vision
# tower). Off, a CPU run keeps exactly the plan's storage format, the one a GPU runs.
CPU_REPACK_4BIT = False


class PlanLoadError(RuntimeError):
    """A plan cannot be applied here (e.g. a device that is not available)."""


def bnb_config(plan: QuantPlan, primary: str, skip: list[str]):
    """transformers' BitsAndBytesConfig for the primary precision, with the full skip list."""
    from transformers import BitsAndBytesConfig

    from .convert import STORAGE_DTYPES

    common = dict(llm_int8_skip_modules=list(skip), llm_int8_threshold=plan.int8_threshold)
    if primary == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, **common)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=primary,
        bnb_4bit_compute_dtype=torch_dtype(plan.compute_dtype),
        bnb_4bit_use_double_quant=plan.double_quant,
        bnb_4bit_quant_storage=STORAGE_DTYPES[plan.quant_storage],
        **common,
    )


def _check_device(device: str, plan: QuantPlan) -> str:
    """The device rule of every CLI (`live.cli.resolve_device`: "auto", cpu, cuda[:N]
    checked against the machine), as a PlanLoadError naming the plan."""
    from live.cli import CliError, resolve_device

    try:
        return resolve_device(device)
    except CliError as err:
        raise PlanLoadError(f"plan {plan.name!r}: {err}") from None


def _bnb_params():
    import sys

    bnb = sys.modules.get("bitsandbytes")
    return () if bnb is None else (bnb.nn.Params4bit, bnb.nn.Int8Params)


def cast_float_tensors(model: nn.Module, precisions: dict[str, str], compute_dtype: str) -> None:
    """Float parameters → their slot's dtype (quantized slots: `compute_dtype`).

    Parameter by parameter, never `module.to(dtype)`: that would turn packed 4-bit
    uint8 storage into floats. Buffers keep the dtype the model gave them (RoPE
    frequencies stay fp32 on purpose)."""
    skip = _bnb_params()
    for name, p in model.named_parameters():
        if isinstance(p, skip) or not p.is_floating_point():
            continue
        precision = precisions[slot_of(name)]
        want = torch_dtype(precision if precision in FLOAT_PRECISIONS else compute_dtype)
        if p.dtype != want:
            p.data = p.data.to(want)


def check_quantized(model: nn.Module, targets: dict[str, str]) -> None:
    """Every target is the right bitsandbytes layer and nothing else is quantized."""
    wrong = []
    for name, module in model.named_modules():
        kind = type(module).__name__
        if name in targets:
            quant_type = getattr(module.weight, "quant_type", targets[name])  # Int8Params has none
            if kind != BNB_TYPE_NAMES[targets[name]] or quant_type != targets[name]:
                wrong.append(f"{name}: {kind}, wanted {targets[name]}")
        elif kind in ("Linear4bit", "Linear8bitLt"):
            wrong.append(f"{name}: {kind}, wanted float")
    if wrong:
        raise RuntimeError(f"quantization plan applied wrongly ({len(wrong)} modules): " + "; ".join(wrong[:5]))


def resolve(config, plan: QuantPlan) -> dict:
    """What `load_model` will do with `plan` on a model of `config` (no weights read):
    {"targets", "primary", "skip", "precisions", "load_dtype"}."""
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
    }


def load_model(path: str | Path, plan: str | QuantPlan = "fp16", device: str = "cpu"):
    """(model, processor) from a checkpoint folder with `plan` applied on `device`.

    `plan`: a `QuantPlan`, a name of `quant.plans.PLANS`, or `NAME+key=value...`.
    The plan and the resolved layout are attached as `model.quant_plan` and
    `model.quant_layout`. Raises ValueError for a bad plan, FileNotFoundError for a
    missing checkpoint, PlanLoadError when the device cannot run the plan,
    `quant.layout.PlacementError` (a ValueError) for host embeddings with a tied head.
    """
    from model.net.config import OmniEmotionConfig
    from model.checkpoint.loading import check_checkpoint, load

    plan = get_plan(plan)
    path = check_checkpoint(path)
    device = _check_device(device, plan)
    layout = resolve(OmniEmotionConfig.from_pretrained(path), plan)
    dtype = torch_dtype(layout["load_dtype"])
    primary = layout["primary"]
    if primary is None:
        model, processor = load(path, dtype=dtype, device=device)
    else:
        qconfig = bnb_config(plan, primary, layout["skip"])
        model, processor = load(path, dtype=dtype, quantization_config=qconfig, device_map={"": device})
    secondary = {n: p for n, p in layout["targets"].items() if p != primary}
    if secondary:
        from .convert import convert_linears

        convert_linears(model, secondary, plan, device)
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
    model.quant_plan = plan
    model.quant_layout = layout
    return model.eval(), processor
