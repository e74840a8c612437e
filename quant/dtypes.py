"""Bytes per element and the torch dtype of the storage precisions: the leaf of quant/
(plans, estimates and the methods all read it; it imports none of them, and torch
only when a dtype is asked for)."""
from __future__ import annotations

BYTES_PER_ELEMENT = {"fp32": 4, "bf16": 2, "fp16": 2, "uint8": 1, "int8": 1}


def torch_dtype(precision: str):
    """"fp32" | "bf16" | "fp16" → the torch dtype (KeyError for anything else)."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
