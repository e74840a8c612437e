"""The registry of quantization methods: one file per method, one line here.

A method is a module that knows the whole of one library's way of quantizing an
`nn.Linear` (see `bnb.py` for the full set of names):

    NAME            the method's name in docs and errors
    PRECISIONS      the slot values it provides (e.g. "hqq4"), unique across methods
    EIGHT_BIT       the subset allowed for the projectors (at most 8 bits)
    DEVICES         {precision: device types it has kernels for here}
    LIBRARY         the library path its layers must equal (tested bit for bit)
    OPTIONS         {plan field: (type, default, check)} of its plan-wide options
    validate(plan)  ValueError for options of the plan it cannot take
    supports(precision, out_features, in_features, plan) -> None or the reason a
                    weight of that shape cannot be quantized (the layer stays float)
    weight_bytes(precision, out_features, in_features, plan) -> (weight, state):
                    bytes of the packed weight as it appears among the parameters, and
                    of everything else the layer keeps outside them (scales, zeros,
                    code tables, metadata, a bias held as a plain attribute)
    BIAS_IN_STATE   whether a converted layer holds its bias outside its parameters
    dequantizes(precision, rows) -> bool: the forward materialises the whole weight in
                    the compute dtype for an input of `rows` rows (window peak)
    convert(linear, precision, plan, device) -> the quantized module on `device`
    is_layer(module, precision) / is_quantized(module)
    state_tensors(module) -> tensors the layer holds outside its parameters and buffers

Plans (`quant.plans`) only read the names and options, so nothing here imports torch
or a quantization library until a layer is converted or measured. GPTQ/AWQ would be a
fourth file here (calibrated: `convert` would need windows; see docs/quantization.md).
"""
from __future__ import annotations

from . import bnb, hqq, torchao

METHODS = {m.NAME: m for m in (bnb, hqq, torchao)}
BY_PRECISION = {p: m for m in METHODS.values() for p in m.PRECISIONS}
QUANT_PRECISIONS = tuple(BY_PRECISION)
EIGHT_BIT = tuple(p for m in METHODS.values() for p in m.EIGHT_BIT)
OPTIONS = {key: spec for m in METHODS.values() for key, spec in m.OPTIONS.items()}


def method_of(precision: str):
    """The method module of a quantized precision; ValueError for anything else."""
    try:
        return BY_PRECISION[precision]
    except KeyError:
        raise ValueError(f"{precision!r} is not a quantized precision ({', '.join(QUANT_PRECISIONS)})") from None


def device_refusal(plan, device: str) -> str | None:
    """Why `plan` cannot run on `device` (a device type or "cuda:N"), or None: the
    first slot whose method has no kernel there."""
    kind = str(device).split(":")[0]
    for slot, precision in plan.precisions().items():
        method = BY_PRECISION.get(precision)
        if method is not None and kind not in method.DEVICES[precision]:
            where = ", ".join(method.DEVICES[precision])
            return (f"plan {plan.name!r}: {slot}={precision} ({method.LIBRARY}) has no {kind} kernel here; "
                    f"it runs on {where} only")
    return None


def is_quantized(module) -> bool:
    """Whether any method converted `module`."""
    return any(m.is_quantized(module) for m in METHODS.values())


def state_tensors(module) -> list:
    """Tensors a quantized layer holds outside its parameters and buffers (any method)."""
    for m in METHODS.values():
        if m.is_quantized(module):
            return m.state_tensors(module)
    return []
