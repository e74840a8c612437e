"""torchao (PyTorch-native): int8 weight-only, int8 dynamic activation × int8 weight,
int4 weight-only.

A layer is the float `nn.Linear` passed through the library's own
`torchao.quantization.quantize_` with its config, on the target device: the module
stays an `nn.Linear` whose weight becomes a torchao tensor subclass, so weights and
outputs are the library's, bit for bit (tested):

    ao-int8    Int8WeightOnlyConfig()                      → Int8Tensor (per-row)
    ao-int8dq  Int8DynamicActivationInt8WeightConfig()     → Int8Tensor with per-row
               symmetric int8 activation quantization at every call
    ao-int4    Int4WeightOnlyConfig(group_size=ao_group_size) → Int4Tensor ("plain"
               packing, torchao 0.18's default): CUDA only here — its kernels come from
               the `mslk` package and need bf16 activations, so a plan with ao-int4
               must have compute_dtype bf16 and is refused on a CPU

Plan option: ao_group_size (ao-int4; 32, 64, 128 or 256, default 128).

Storage (the tensors inside the weight subclass, `__tensor_flatten__`):

    int8, int8dq  qdata int8 out·in; scale fp32 out × 4; zero_point int8 out × 1
    int4          qdata uint8 out·in/2 (two per byte); scale and zero_point, each
                  (in/group_size, out) in the weight's dtype (bf16: × 2)
    bias: the nn.Linear's own parameter, in the plan's float dtype.

int8 weight-only multiplies by the int8 weight cast to the activation dtype, so its
forward materialises the whole weight in the compute dtype (`dequantizes`).
"""
from __future__ import annotations

import sys

NAME = "torchao"
PRECISIONS = ("ao-int8", "ao-int8dq", "ao-int4")
EIGHT_BIT = ("ao-int8", "ao-int8dq")
DEVICES = {"ao-int8": ("cpu", "cuda"), "ao-int8dq": ("cpu", "cuda"), "ao-int4": ("cuda",)}
LIBRARY = "torchao.quantization.quantize_"
GROUP_SIZES = (32, 64, 128, 256)
OPTIONS = {"ao_group_size": (int, 128)}
BIAS_IN_STATE = False
FP32, INT8 = 4, 1


def validate(plan) -> None:
    if plan.option("ao_group_size") not in GROUP_SIZES:
        raise ValueError(f"plan {plan.name!r}: ao_group_size must be one of {', '.join(map(str, GROUP_SIZES))}, "
                         f"got {plan.option('ao_group_size')}")
    uses_int4 = [s for s, p in plan.precisions().items() if p == "ao-int4"]
    if uses_int4 and plan.compute_dtype != "bf16":
        raise ValueError(f"plan {plan.name!r}: {uses_int4[0]}=ao-int4 needs compute_dtype bf16 (torchao's int4 "
                         f"kernels take bf16 activations), got {plan.compute_dtype}; add +dtype=bf16")


def supports(precision: str, out_features: int, in_features: int, plan) -> str | None:
    gs = plan.option("ao_group_size")
    if precision == "ao-int4" and in_features % gs:
        return f"in_features {in_features} is not a multiple of ao_group_size {gs}"
    return None


def weight_bytes(precision: str, out_features: int, in_features: int, plan) -> tuple[int, int]:
    """(bytes inside the weight subclass, 0): scales and zeros live inside the weight."""
    from ..dtypes import BYTES_PER_ELEMENT

    n = out_features * in_features
    if precision in ("ao-int8", "ao-int8dq"):
        return n + out_features * (FP32 + INT8), 0
    if precision == "ao-int4":
        groups = in_features // plan.option("ao_group_size")
        return n // 2 + 2 * groups * out_features * BYTES_PER_ELEMENT[plan.compute_dtype], 0
    raise ValueError(f"{precision!r} is not a torchao precision ({', '.join(PRECISIONS)})")


def dequantizes(precision: str, rows: int) -> bool:
    return precision == "ao-int8"


def config(precision: str, plan):
    """The library's config object for this layer (what `quantize_` is given)."""
    from torchao.quantization import (
        Int4WeightOnlyConfig,
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
    )

    if precision == "ao-int8":
        return Int8WeightOnlyConfig()
    if precision == "ao-int8dq":
        return Int8DynamicActivationInt8WeightConfig()
    if precision == "ao-int4":
        return Int4WeightOnlyConfig(group_size=plan.option("ao_group_size"))
    raise ValueError(f"{precision!r} is not a torchao precision ({', '.join(PRECISIONS)})")


def convert(linear, precision: str, plan, device):
    """`linear` itself, moved to `device` and quantized in place by `quantize_`."""
    from torchao.quantization import quantize_

    linear = linear.to(device)
    quantize_(linear, config(precision, plan), device=device)
    return linear


def _kind(module) -> str | None:
    lib = sys.modules.get("torchao.quantization")
    weight = getattr(module, "weight", None)
    if lib is None or weight is None:
        return None
    if isinstance(weight, lib.Int8Tensor):
        return "ao-int8" if weight.act_quant_kwargs is None else "ao-int8dq"
    if type(weight).__name__ == "Int4Tensor":
        return "ao-int4"
    return None


def is_quantized(module) -> bool:
    return _kind(module) is not None


def is_layer(module, precision: str) -> bool:
    return _kind(module) == precision


def state_tensors(module) -> list:
    return []  # everything is inside the weight (`inner_tensors`)
