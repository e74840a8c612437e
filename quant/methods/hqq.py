"""HQQ (Half-Quadratic Quantization, `hqq` package): calibration-free, 1/2/3/4/8 bits.

Each layer becomes the library's own `hqq.core.quantize.HQQLinear`, built from the
float `nn.Linear` with `BaseQuantizeConfig(nbits, group_size, axis)` and the plan's
compute dtype on the target device (it quantizes where the weight is sent, CPU or
CUDA), so the packed weights, scales, zeros and outputs are the library's, bit for bit
(tested). Plan options (plan-wide, for every hqq slot):

    hqq_group_size  elements per group (a multiple of 8; default 64)
    hqq_axis        1: groups along the flattened rows (the library's default), 0: columns
    hqq_optimize    the half-quadratic refinement of scale/zero (default true)
    hqq_round_zero  "auto" (the library's rule: round the zero point at 4 bits only),
                    "true" or "false"

Quantized scales/zeros (`quant_scale`, `quant_zero`) are deprecated in hqq 0.2.8 and
ignored by `HQQLinear`, so they are not offered.

Storage, n = out·in, groups = n / group_size; the weight reshaped to (groups, group_size)
(axis 1) or (group_size, groups) (axis 0) is packed along its first dimension, R rows:

    8 bits  R rows uint8            4 bits  R/2 rows uint8 (two per byte)
    2 bits  R/4 rows uint8          1 bit   R/8 rows uint8
    3 bits  ceil(R/10) rows int32 (ten 3-bit values per word; R padded to a multiple of 10)
    scale, zero: one each per group, in the compute dtype (meta["scale"], meta["zero"])
    bias: a plain tensor attribute in the compute dtype (not a parameter)

Shapes it cannot take (n not a multiple of group_size, or R not a multiple of the
values per byte) stay float. The PyTorch backend dequantizes the whole weight into the
compute dtype on every forward, decode steps included (`dequantizes`).
"""
from __future__ import annotations

import math
import sys

NAME = "hqq"
BITS = {"hqq1": 1, "hqq2": 2, "hqq3": 3, "hqq4": 4, "hqq8": 8}
PRECISIONS = tuple(BITS)
EIGHT_BIT = ("hqq8",)
DEVICES = {p: ("cpu", "cuda") for p in PRECISIONS}
LIBRARY = "hqq.core.quantize.HQQLinear"
ROUND_ZERO = ("auto", "true", "false")
OPTIONS = {  # plan field: (type, default)
    "hqq_group_size": (int, 64),
    "hqq_axis": (int, 1),
    "hqq_optimize": (bool, True),
    "hqq_round_zero": (str, "auto"),
}
PER_BYTE = {8: 1, 4: 2, 2: 4, 1: 8}  # values packed into one uint8
THREE_BIT_WORD = 10  # 3-bit values per int32
INT32 = 4


def validate(plan) -> None:
    gs, axis = plan.option("hqq_group_size"), plan.option("hqq_axis")
    if gs <= 0 or gs % 8:
        raise ValueError(f"plan {plan.name!r}: hqq_group_size must be a positive multiple of 8, got {gs}")
    if axis not in (0, 1):
        raise ValueError(f"plan {plan.name!r}: hqq_axis must be 0 or 1, got {axis}")
    if plan.option("hqq_round_zero") not in ROUND_ZERO:
        raise ValueError(f"plan {plan.name!r}: hqq_round_zero must be one of {', '.join(ROUND_ZERO)}, "
                         f"got {plan.option('hqq_round_zero')!r}")


def _rows(out_features: int, in_features: int, plan) -> tuple[int, int]:
    """(rows, columns) of the grouped weight before packing."""
    n, gs = out_features * in_features, plan.option("hqq_group_size")
    return (n // gs, gs) if plan.option("hqq_axis") == 1 else (gs, n // gs)


def supports(precision: str, out_features: int, in_features: int, plan) -> str | None:
    n, gs, bits = out_features * in_features, plan.option("hqq_group_size"), BITS[precision]
    if n % gs:
        return f"{out_features}x{in_features} weight is not a whole number of {gs}-element groups"
    rows, _ = _rows(out_features, in_features, plan)
    if bits != 3 and rows % PER_BYTE[bits]:
        return f"{rows} rows to pack do not divide by {PER_BYTE[bits]} ({bits}-bit packing)"
    return None


def weight_bytes(precision: str, out_features: int, in_features: int, plan) -> tuple[int, int]:
    """(W_q bytes, scale + zero bytes); the bias, also outside the parameters, is priced
    by the caller in the compute dtype (`BIAS_IN_STATE`)."""
    from ..dtypes import BYTES_PER_ELEMENT

    bits = BITS[precision]
    rows, cols = _rows(out_features, in_features, plan)
    if bits == 3:
        weight = math.ceil(rows / THREE_BIT_WORD) * cols * INT32
    else:
        weight = rows // PER_BYTE[bits] * cols
    groups = out_features * in_features // plan.option("hqq_group_size")
    return weight, 2 * groups * BYTES_PER_ELEMENT[plan.compute_dtype]


BIAS_IN_STATE = True  # HQQLinear keeps its bias as a plain attribute


def dequantizes(precision: str, rows: int) -> bool:
    return True


def quant_config(precision: str, plan) -> dict:
    """The library's config dict for this layer (what `HQQLinear` is given)."""
    from hqq.core.quantize import BaseQuantizeConfig

    cfg = BaseQuantizeConfig(nbits=BITS[precision], group_size=plan.option("hqq_group_size"),
                             axis=plan.option("hqq_axis"))
    params = cfg["weight_quant_params"]
    params["optimize"] = plan.option("hqq_optimize")
    if plan.option("hqq_round_zero") != "auto":
        params["round_zero"] = plan.option("hqq_round_zero") == "true"
    return cfg


def convert(linear, precision: str, plan, device):
    """`HQQLinear` of `linear` on `device`; `linear`'s own tensors are released (the
    library's del_orig), so pass a copy to keep it."""
    import torch
    from hqq.core.quantize import HQQLinear

    from ..dtypes import torch_dtype

    if torch.device(device).type == "cuda" and linear.weight.device.type != "cuda":
        linear = linear.to(device)  # quantize on the card (the library works where the weight is)
    return HQQLinear(linear, quant_config(precision, plan), del_orig=True,
                     compute_dtype=torch_dtype(plan.compute_dtype), device=str(device))


def is_quantized(module) -> bool:
    lib = sys.modules.get("hqq.core.quantize")
    return lib is not None and isinstance(module, lib.HQQLinear)


def is_layer(module, precision: str) -> bool:
    return is_quantized(module) and module.meta["nbits"] == BITS[precision]


def state_tensors(module) -> list:
    """scale, zero and the bias (plain attributes of an HQQLinear)."""
    import torch

    meta = module.meta
    tensors = [meta.get("scale"), meta.get("zero"), module.bias]
    return [t for t in tensors if isinstance(t, torch.Tensor) and not isinstance(t, torch.nn.Parameter)]
