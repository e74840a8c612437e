"""Bytes a plan's model occupies: estimated from shapes (meta device), and measured.

Storage rules: each quantized layer's weight is priced by its method
(`quant.methods.<method>.weight_bytes`: packed weight, scales, zeros, code tables,
metadata; the byte formulas are in each method's docstring and docs/quantization.md).
Everything else:

    fp32/bf16/fp16   numel × 4/2/2
    bias of a quantized layer, and every other tensor of a quantized slot: compute dtype
    buffers: as the model creates them (RoPE inv_freq stays fp32, index tables int64)

`get_memory_footprint()` counts parameters and buffers only, each as numel × element
size: it misses what a layer keeps outside its parameters (bitsandbytes' quant_state,
HQQ's scale/zero/bias: "quant_state" here) and misprices torchao's weight subclasses
(counted as float). `measure` counts the real tensors, deduplicated by storage, and
reports the footprint beside them.
"""
from __future__ import annotations

import contextlib
import math
import sys

import torch
from torch import nn

from .dtypes import torch_dtype
from .layout import effective_precisions, host_slots, is_tied, quant_targets, slot_of, slot_totals
from .methods import method_of
from .plans import BYTES_PER_ELEMENT, FLOAT_PRECISIONS, QuantPlan


def linear_bytes(precision: str, out_features: int, in_features: int, plan: QuantPlan) -> tuple[int, int]:
    """(weight bytes, bytes kept outside the parameters) of one quantized Linear's
    weight, by its method."""
    return method_of(precision).weight_bytes(precision, out_features, in_features, plan)


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
            weight, state = linear_bytes(targets[module_name], *p.shape, plan)
            per_name[name] = weight + state
            state_total += state
        elif module_name in targets and method_of(targets[module_name]).BIAS_IN_STATE:
            per_name[name] = p.numel() * compute  # a bias the layer holds as a plain attribute
            state_total += per_name[name]
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


def meta_model(config, plan: QuantPlan | None = None, dtype: torch.dtype | None = None) -> nn.Module:
    """The float model of `config` on the meta device (parameters and buffers: shapes
    only, no memory), in eval mode, created in the plan's float dtype (the dtype
    `load_model` reads the checkpoint in, so buffers get the dtypes a real load gives
    them), or in `dtype`, or in torch's default dtype when neither is given."""
    from accelerate import init_empty_weights

    from model.net.modeling import OmniEmotionForConditionalGeneration

    if plan is not None and dtype is not None:
        raise ValueError(f"meta_model: give a plan or a dtype, not both (plan {plan.name!r}, dtype {dtype})")
    dtype = torch_dtype(plan.float_dtype) if plan is not None else dtype or torch.get_default_dtype()
    with init_empty_weights(include_buffers=True), _default_dtype(dtype):
        return OmniEmotionForConditionalGeneration(config).eval()


def estimate_config(config, plan: QuantPlan) -> dict:
    """`estimate_model` of the meta model of `config`, plus "window": the estimated
    peak device memory of analysing one window beyond the weights
    (`quant.window_memory.window_peak`), and "peak_window" = its peak."""
    from .window_memory import window_peak

    model = meta_model(config, plan)
    out = estimate_model(model, plan)
    out["window"] = window_peak(model, plan)
    out["peak_window"] = out["window"]["peak"]
    from .layout import unsupported_layers

    out["unsupported"] = unsupported_layers(model, plan)  # layers of quantized slots left float
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


def _storage_key(t: torch.Tensor) -> tuple:
    return (t.device.type, t.untyped_storage().data_ptr())


def inner_tensors(t: torch.Tensor) -> list[torch.Tensor]:
    """The plain tensors that hold `t`'s data: itself, or for a wrapper subclass such as
    torchao's Int8Tensor (whose own numel × element_size is the float shape's) the
    tensors of its `__tensor_flatten__`, recursively."""
    if type(t) in (torch.Tensor, nn.Parameter) or not hasattr(t, "__tensor_flatten__"):
        return [t]
    names, _ = t.__tensor_flatten__()
    return [x for n in names if getattr(t, n, None) is not None for x in inner_tensors(getattr(t, n))]


def measure(model: nn.Module) -> dict:
    """Bytes the loaded model really holds, per slot/component, same keys as
    `estimate_model`, plus "footprint" = model.get_memory_footprint().

    Quant-state tensors are counted once per storage (a tensor shared between layers,
    or a CB that aliases the int8 weight, is not counted twice). Host embedding tables
    (`quant.placement`) are counted under their slot and in "host", not in "total"."""
    from .placement import host_tensors

    from .methods import state_tensors

    host = host_tensors(model)
    seen = {_storage_key(t) for t in host.values()}
    per_name: dict[str, int] = {name: t.numel() * t.element_size() for name, t in host.items()}
    host_bytes = sum(per_name.values())
    for name, p in model.named_parameters():
        inner = inner_tensors(p)
        seen.update(_storage_key(t) for t in inner)
        per_name[name] = sum(t.numel() * t.element_size() for t in inner)
    for name, b in model.named_buffers():
        per_name[name] = b.numel() * b.element_size()
    params_buffers = sum(per_name.values()) - host_bytes
    state_total = 0
    for name, module in model.named_modules():
        for t in state_tensors(module):
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
