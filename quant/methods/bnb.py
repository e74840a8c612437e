"""bitsandbytes: LLM.int8 (`Linear8bitLt`) and 4-bit nf4/fp4 (`Linear4bit`).

The primary precision of a bitsandbytes-only plan is applied by transformers while it
streams the checkpoint (`quant.load.bnb_config`); every other layer goes through
`convert` here: the float weight is handed to a bitsandbytes parameter on the CPU and
quantized by its `.to(device)`, exactly as transformers does, so both paths give
identical layers (tested).

Storage (bitsandbytes 0.50):

    int8     weight int8 out·in (a parameter); SCB row scales fp32 out × 4
    nf4/fp4  weight packed two per byte ceil(out·in / 2) (a parameter); quant_state with
             blocks = ceil(out·in / 64):
               no double quant: absmax fp32 blocks × 4
               double quant:    absmax uint8 blocks + nested absmax fp32 ceil(blocks/256) × 4
                                + offset fp32 4 + nested code table fp32 256 × 4
               code table (the 16 levels) fp32 16 × 4
    bias: a parameter in the compute dtype.
"""
from __future__ import annotations

import math
import sys

NAME = "bitsandbytes"
PRECISIONS = ("int8", "nf4", "fp4")
EIGHT_BIT = ("int8",)
DEVICES = {p: ("cpu", "cuda") for p in PRECISIONS}
LIBRARY = "bitsandbytes.nn.Linear8bitLt / Linear4bit"
BIAS_IN_STATE = False
OPTIONS: dict = {}  # double_quant, quant_storage, int8_threshold are QuantPlan fields (older than the registry)
TYPE_NAMES = {"int8": "Linear8bitLt", "nf4": "Linear4bit", "fp4": "Linear4bit"}

BLOCKSIZE_4BIT = 64  # elements per absmax block (bitsandbytes default, CPU and CUDA)
NESTED_BLOCKSIZE = 256  # absmax values per block of the double quantization
CODE_4BIT_ENTRIES = 16  # nf4/fp4 level table, fp32
NESTED_CODE_ENTRIES = 256  # dynamic 8-bit map of the double quantization, fp32
FP32 = 4


def validate(plan) -> None:
    fourbit = set(plan.precisions().values()) & {"nf4", "fp4"}
    if len(fourbit) > 1:
        # One QuantState code table per model keeps the loader a single transformers pass
        # plus one direct pass; mixing nf4 and fp4 buys nothing measurable.
        raise ValueError(f"plan {plan.name!r}: use either nf4 or fp4, not both ({sorted(fourbit)})")


def supports(precision: str, out_features: int, in_features: int, plan) -> str | None:
    return None  # any shape


def weight_bytes(precision: str, out_features: int, in_features: int, plan) -> tuple[int, int]:
    """(weight bytes, quant-state bytes) of one layer's weight (module docstring)."""
    return linear_bytes(precision, out_features, in_features, plan.double_quant)


def linear_bytes(precision: str, out_features: int, in_features: int, double_quant: bool) -> tuple[int, int]:
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
    raise ValueError(f"{precision!r} is not a bitsandbytes precision ({', '.join(PRECISIONS)})")


def dequantizes(precision: str, rows: int) -> bool:
    """A 4-bit weight is dequantized whole for inputs of more than one row (one row: gemv)."""
    return precision in ("nf4", "fp4") and rows > 1


def storage_dtype(name: str):
    """bnb_4bit_quant_storage's torch dtype for a plan's `quant_storage`."""
    import torch

    return {"uint8": torch.uint8, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[name]


def convert(linear, precision: str, plan, device):
    """A bitsandbytes copy of `linear` (weight (out, in)) in `precision` on `device`.

    The bias is kept in the plan's compute dtype (Linear4bit casts it there on its first
    forward anyway, so storing it so keeps the footprint stable)."""
    import bitsandbytes as bnb
    import torch
    from torch import nn

    from ..dtypes import torch_dtype

    compute = torch_dtype(plan.compute_dtype)
    weight = linear.weight.detach().to("cpu")  # bitsandbytes quantizes on a move off the CPU
    has_bias = linear.bias is not None
    if precision == "int8":
        new = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias, has_fp16_weights=False,
                                  threshold=plan.int8_threshold, device="meta")
        new.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
    elif precision in ("nf4", "fp4"):
        storage = storage_dtype(plan.quant_storage)
        new = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias, compute_dtype=compute,
                                compress_statistics=plan.double_quant, quant_type=precision,
                                quant_storage=storage, device="meta")
        new.weight = bnb.nn.Params4bit(weight, requires_grad=False, compress_statistics=plan.double_quant,
                                       quant_type=precision, quant_storage=storage, module=new)
    else:
        raise ValueError(f"{precision!r} is not a bitsandbytes precision ({', '.join(PRECISIONS)})")
    if has_bias:
        new.bias = nn.Parameter(linear.bias.detach().to("cpu", compute), requires_grad=False)
    return new.to(device)


def is_layer(module, precision: str) -> bool:
    if type(module).__name__ != TYPE_NAMES[precision] or not is_quantized(module):
        return False
    return getattr(module.weight, "quant_type", precision) == precision  # Int8Params has none


def is_quantized(module) -> bool:
    bnb = sys.modules.get("bitsandbytes")
    return bnb is not None and isinstance(module, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))


def state_tensors(module) -> list:
    """The 4-bit quant_state tensors (absmax, code, nested state) or the int8 row scales."""
    import torch

    bnb = sys.modules.get("bitsandbytes")
    if bnb is None:
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
