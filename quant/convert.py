"""Direct bitsandbytes conversion of individual `nn.Linear` layers.

Used by `quant.load` for the layers transformers' single `BitsAndBytesConfig` pass
cannot cover: a plan mixes at most two quantized precisions (e.g. `edge-8gb`: decoder
nf4 through transformers, lm_head int8 here). The layer's float weight is handed to a
bitsandbytes parameter on the CPU and quantized by its `.to(device)`, exactly as
transformers does, so both paths give identical layers.
"""
from __future__ import annotations

import torch
from torch import nn

from .estimate import torch_dtype
from .plans import QuantPlan

STORAGE_DTYPES = {"uint8": torch.uint8, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def quantized_linear(linear: nn.Linear, precision: str, plan: QuantPlan, device: str | torch.device) -> nn.Module:
    """A bitsandbytes copy of `linear` (weight (out, in)) in `precision` on `device`.

    The bias is kept in the plan's compute dtype (Linear4bit casts it there on its first
    forward anyway, so storing it so keeps the footprint stable)."""
    import bitsandbytes as bnb

    compute = torch_dtype(plan.compute_dtype)
    weight = linear.weight.detach().to("cpu")  # bitsandbytes quantizes on a move off the CPU
    has_bias = linear.bias is not None
    if precision == "int8":
        new = bnb.nn.Linear8bitLt(
            linear.in_features,
            linear.out_features,
            bias=has_bias,
            has_fp16_weights=False,
            threshold=plan.int8_threshold,
            device="meta",
        )
        new.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    elif precision in ("nf4", "fp4"):
        storage = STORAGE_DTYPES[plan.quant_storage]
        new = bnb.nn.Linear4bit(
            linear.in_features,
            linear.out_features,
            bias=has_bias,
            compute_dtype=compute,
            compress_statistics=plan.double_quant,
            quant_type=precision,
            quant_storage=storage,
            device="meta",
        )
        new.weight = bnb.nn.Params4bit(
            weight,
            requires_grad=False,
            compress_statistics=plan.double_quant,
            quant_type=precision,
            quant_storage=storage,
            module=new,
        )
    else:
        raise ValueError(f"{precision!r} is not a quantized precision (int8, nf4, fp4)")
    if has_bias:
        new.bias = nn.Parameter(linear.bias.detach().to("cpu", compute), requires_grad=False)
    return new.to(device)


def convert_linears(model: nn.Module, targets: dict[str, str], plan: QuantPlan, device: str | torch.device) -> None:
    """Replace each named `nn.Linear` of `targets` ({name: precision}) in place."""
    for name, precision in targets.items():
        linear = model.get_submodule(name)
        if type(linear) is not nn.Linear:
            raise TypeError(f"{name} is a {type(linear).__name__}, not an nn.Linear; cannot quantize it to {precision}")
        model.set_submodule(name, quantized_linear(linear, precision, plan, device))
        del linear
