"""Direct conversion of individual `nn.Linear` layers, by their plan's method.

Used by `quant.load` for every layer transformers' single `BitsAndBytesConfig` pass does
not cover: the second bitsandbytes precision of a plan (e.g. `edge-8gb`'s int8
lm_head), and every layer of a plan that uses HQQ or torchao. How a layer is converted
is the method's (`quant.methods`); this only walks the targets.
"""
from __future__ import annotations

import torch
from torch import nn

from .methods import method_of
from .plans import QuantPlan


def quantized_linear(linear: nn.Linear, precision: str, plan: QuantPlan, device: str | torch.device) -> nn.Module:
    """The quantized copy of `linear` (weight (out, in)) in `precision` on `device`."""
    return method_of(precision).convert(linear, precision, plan, device)


def convert_linears(model: nn.Module, targets: dict[str, str], plan: QuantPlan, device: str | torch.device) -> None:
    """Replace each named `nn.Linear` of `targets` ({name: precision}) in place."""
    for name, precision in targets.items():
        linear = model.get_submodule(name)
        if type(linear) is not nn.Linear:
            raise TypeError(f"{name} is a {type(linear).__name__}, not an nn.Linear; cannot quantize it to {precision}")
        model.set_submodule(name, quantized_linear(linear, precision, plan, device))
        del linear
