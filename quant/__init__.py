"""Quantization plans for Omni-Emotion: a method and precision per component
(bitsandbytes, HQQ, torchao: the registry in `quant.methods`), loading, byte-exact
memory estimates, a quantized KV cache and the plan-comparison harness
(docs/quantization.md).

Import-light on purpose: nothing here imports a quantization library (or transformers)
until a function that needs it is called, so `model/`, `live/` and the app start fast.

    from quant import load_model, get_plan, PLANS
    model, processor = load_model("ckpt", "edge-8gb", device="cuda")
"""
from __future__ import annotations

from .plans import PLANS, PRECISIONS, SLOTS, QuantPlan, get_plan, parse_plans

__all__ = [
    "PLANS",
    "PRECISIONS",
    "SLOTS",
    "QuantPlan",
    "get_plan",
    "parse_plans",
    "load_model",
    "estimate_preset",
    "estimate_checkpoint",
    "estimate_model",
    "measure",
    "run_experiments",
]

_LAZY = {
    "load_model": "quant.load",
    "estimate_preset": "quant.estimate",
    "estimate_checkpoint": "quant.estimate",
    "estimate_model": "quant.estimate",
    "measure": "quant.estimate",
    "run_experiments": "quant.experiments",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'quant' has no attribute {name!r}")
