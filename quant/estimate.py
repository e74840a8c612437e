"""Bytes a plan's model occupies: estimated from shapes (meta device), and measured.

Storage rules (bitsandbytes 0.50, what `quant.load` produces):

    fp32/bf16/fp16   numel × 4/2/2
    int8 (Linear8bitLt)  weight int8: out·in;  SCB row scales fp32: out × 4
    nf4/fp4 (Linear4bit) weight packed two per byte: ceil(out·in / 2)
                     quant_state, blocks = ceil(out·in / 64):
                       no double quant: absmax fp32 blocks × 4
                       double quant:    absmax uint8 blocks × 1
                                        + nested absmax fp32 ceil(blocks / 256) × 4
                                        + offset fp32 4
                                        + nested code table fp32 256 × 4
                       code table (nf4/fp4 levels) fp32 16 × 4
    bias of a quantized layer, and every other tensor of a quantized slot: compute dtype
    buffers: as the model creates them (RoPE inv_freq stays fp32, index tables int64)

`get_memory_footprint()` counts parameters and buffers only; the quant_state tensors
hang off the weights as plain attributes, so it misses them (~12% of a 4-bit layer
without double quant). `measure` adds them, deduplicated by storage, and reports both.
"""
from __future__ import annotations

import contextlib
import math
import sys

import torch
from torch import nn

from .layout import effective_precisions, host_slots, is_tied, quant_targets, slot_of, slot_totals
from .plans import BYTES_PER_ELEMENT, FLOAT_PRECISIONS, QuantPlan

BLOCKSIZE_4BIT = 64  # elements per absmax block (bitsandbytes default, CPU and CUDA)
NESTED_BLOCKSIZE = 256  # absmax values per block of the double quantization
CODE_4BIT_ENTRIES = 16  # nf4/fp4 level table, fp32
NESTED_CODE_ENTRIES = 256  # dynamic 8-bit map of the double quantization, fp32
FP32 = 4


def torch_dtype(precision: str) -> torch.dtype:
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def linear_bytes(precision: str, out_features: int, in_features: int, double_quant: bool) -> tuple[int, int]:
    """(weight bytes, quant-state bytes) of one quantized Linear's weight."""
    n = out_features * in_features
    if precision == "int8":
        return n, out_features * FP32
    if precision in ("nf4", "fp4"):
        blocks = math.ceil(n / BLOCKSIZE_4BIT)
        state = CODE_4BIT_ENTRIES * FP32
        if double_quant:
            state += blocks + math.ceil(blocks / NESTED_BLOCKSIZE) * FP32 + FP32 + NESTED_CODE_ENTRIES * FP32
        else:
            state += blocks * FP32
        return math.ceil(n / 2), state
    raise ValueError(f"{precision!r} is not a quantized precision")


def estimate_model(model: nn.Module, plan: QuantPlan) -> dict:
    """Bytes per slot/component of `model` (float, typically on the meta device) once
    `plan` is applied. Returns {"slots", "components", "total", "host", "params_buffers",
    "quant_state", "params"}: `total` is device-resident, `host` what the plan keeps in
    host memory (its slots still appear in "slots"), params_buffers what
    get_memory_footprint() will say (device parameters + buffers). Raises
    PlacementError for a placement the model cannot take."""
    precisions = effective_precisions(plan, is_tied(model))
    targets = quant_targets(model, plan)
    compute = BYTES_PER_ELEMENT[plan.compute_dtype]
    per_name: dict[str, int] = {}
    state_total = 0
    params = dict.fromkeys(precisions, 0)
    for name, p in model.named_parameters():  # tied parameters are listed once
        module_name, _, attr = name.rpartition(".")
        slot = slot_of(name)
        params[slot] += p.numel()
        if module_name in targets and attr == "weight":
            weight, state = linear_bytes(targets[module_name], *p.shape, plan.double_quant)
            per_name[name] = weight + state
            state_total += state
        elif precisions[slot] in FLOAT_PRECISIONS:
            per_name[name] = p.numel() * BYTES_PER_ELEMENT[precisions[slot]]
        else:
            per_name[name] = p.numel() * compute
    for name, b in model.named_buffers():
        per_name[name] = b.numel() * b.element_size()
    out = slot_totals(per_name, host_slots(plan))
    out["quant_state"] = state_total
    out["params_buffers"] = out["total"] - state_total
    out["params"] = params
    return out


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def meta_model(config, plan: QuantPlan) -> nn.Module:
    """The float model of `config` on the meta device, created in the plan's float dtype
    (the dtype `load_model` reads the checkpoint in, so buffers get the dtypes a real
    load gives them). No memory is allocated."""
    from accelerate import init_empty_weights

    from model.net.modeling import OmniEmotionForConditionalGeneration

    with init_empty_weights(include_buffers=True), _default_dtype(torch_dtype(plan.float_dtype)):
        return OmniEmotionForConditionalGeneration(config)


def estimate_config(config, plan: QuantPlan) -> dict:
    """`estimate_model` of the meta model of `config`, plus "window": the estimated
    peak device memory of analysing one window beyond the weights
    (`quant.window_memory.window_peak`), and "peak_window" = its peak."""
    from .window_memory import window_peak

    model = meta_model(config, plan)
    out = estimate_model(model, plan)
    out["window"] = window_peak(model, plan)
    out["peak_window"] = out["window"]["peak"]
    return out


def estimate_preset(preset: str, plan: QuantPlan, **overrides) -> dict:
    """Estimate for `model.net.presets` preset (`tiny`, `0.5b`, `7b`)."""
    from model.net.presets import preset_config

    config = preset_config(preset, **overrides)
    config.face_token_id = config.audio_token_id = 0  # ids don't change the shapes
    return estimate_config(config, plan)


def estimate_checkpoint(path, plan: QuantPlan) -> dict:
    """Estimate for a checkpoint folder, from its config.json only."""
    from model.net.config import OmniEmotionConfig

    return estimate_config(OmniEmotionConfig.from_pretrained(path), plan)


def _quant_state_tensors(module: nn.Module) -> list[torch.Tensor]:
    bnb = sys.modules.get("bitsandbytes")
    if bnb is None:  # never imported: nothing in this process is quantized
        return []

    if isinstance(module, bnb.nn.Linear4bit):
        qs = module.weight.quant_state
        tensors = [qs.absmax, qs.code]
        if getattr(qs, "nested", False):
            tensors += [qs.offset, qs.state2.absmax, qs.state2.code]
        return [t for t in tensors if isinstance(t, torch.Tensor)]
    if isinstance(module, bnb.nn.Linear8bitLt):
        scb = getattr(module.weight, "SCB", None)
        if scb is None:
            scb = module.state.SCB
        return [t for t in (scb, module.state.CB) if isinstance(t, torch.Tensor)]
    return []


def _storage_key(t: torch.Tensor) -> tuple:
    return (t.device.type, t.untyped_storage().data_ptr())


def measure(model: nn.Module) -> dict:
    """Bytes the loaded model really holds, per slot/component, same keys as
    `estimate_model`, plus "footprint" = model.get_memory_footprint().

    Quant-state tensors are counted once per storage (a tensor shared between layers,
    or a CB that aliases the int8 weight, is not counted twice). Host embedding tables
    (`quant.placement`) are counted under their slot and in "host", not in "total"."""
    from .placement import host_tensors

    host = host_tensors(model)
    seen = {_storage_key(t) for t in host.values()}
    per_name: dict[str, int] = {name: t.numel() * t.element_size() for name, t in host.items()}
    host_bytes = sum(per_name.values())
    for name, p in model.named_parameters():
        seen.add(_storage_key(p))
        per_name[name] = p.numel() * p.element_size()
    for name, b in model.named_buffers():
        per_name[name] = b.numel() * b.element_size()
    params_buffers = sum(per_name.values()) - host_bytes
    state_total = 0
    for name, module in model.named_modules():
        for t in _quant_state_tensors(module):
            key = _storage_key(t)
            if key in seen:
                continue
            seen.add(key)
            n = t.numel() * t.element_size()
            per_name[f"{name}.weight.quant_state.{len(seen)}"] = n
            state_total += n
    out = slot_totals(per_name, tuple({slot_of(name) for name in host}))
    out["quant_state"] = state_total
    out["params_buffers"] = params_buffers
    out["footprint"] = int(model.get_memory_footprint())
    return out
