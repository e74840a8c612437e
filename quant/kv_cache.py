"""A quantized KV cache while generating (`kv_cache` in a plan): transformers'
`QuantizedCache` with the HQQ or quanto backend at 2 or 4 bits.

`apply(model, plan)` sets it as the model's generation default
(`generation_config.cache_implementation = "quantized"` and its `cache_config`), so
every `model.generate` — the live analyser's, the harness's — uses it without a change
to `model/`. The cache (KIVI-style) quantizes the prefill's keys and values at once,
keeps up to `RESIDUAL_LENGTH` new tokens in the compute dtype, and re-quantizes
everything when that residual fills.

Stored bytes (HQQ backend; `stored_bytes`): per layer, keys and values each a
(1, kv_heads, tokens, head_dim) tensor of N elements, grouped in `Q_GROUP_SIZE` along
axis 0: N·nbits/8 packed + a scale and a zero per group (N/64 each) in the compute
dtype; residual tokens at layers × 2 × kv_heads × head_dim × dtype bytes. The quanto
backend stores the same amount (int-packed data, a scale and a shift per group) but
needs `optimum-quanto`, which is not installed here (`available`).
"""
from __future__ import annotations

import importlib.util

from .plans import BYTES_PER_ELEMENT, QuantPlan

Q_GROUP_SIZE = 64  # elements per scale/zero group (transformers' default)
RESIDUAL_LENGTH = 128  # tokens kept in the compute dtype before re-quantizing (transformers' default)
BACKENDS = {"hqq": "hqq", "quanto": "optimum.quanto"}  # backend → module it needs


def parse(kv_cache: str) -> tuple[str, int] | None:
    """"hqq4" → ("hqq", 4); "none" → None."""
    if kv_cache == "none":
        return None
    backend, bits = kv_cache[:-1], int(kv_cache[-1])
    if backend not in BACKENDS:
        raise ValueError(f"kv_cache {kv_cache!r}: unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    return backend, bits


def available(backend: str) -> str | None:
    """None, or why the backend cannot run here."""
    module = BACKENDS[backend]
    if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
        return f"the {backend} KV cache backend needs {module}, which is not installed (pip install optimum-quanto)"
    return None


def cache_config(plan: QuantPlan) -> dict | None:
    parsed = parse(plan.kv_cache)
    if parsed is None:
        return None
    backend, bits = parsed
    return {"backend": backend, "nbits": bits, "q_group_size": Q_GROUP_SIZE, "residual_length": RESIDUAL_LENGTH}


def apply(model, plan: QuantPlan) -> None:
    """Make `plan`'s KV cache the model's generation default; ValueError naming the
    backend when it is not installed."""
    config = cache_config(plan)
    if config is None:
        return
    why = available(config["backend"])
    if why:
        raise ValueError(f"plan {plan.name!r}: {why}")
    model.generation_config.cache_implementation = "quantized"
    model.generation_config.cache_config = config


def _kv_shape(text_config) -> tuple[int, int, int]:
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    return text_config.num_hidden_layers, text_config.num_key_value_heads, head_dim


def stored_bytes(text_config, plan: QuantPlan, quantized_tokens: int, residual_tokens: int) -> int:
    """Bytes the cache holds for `quantized_tokens` quantized and `residual_tokens` in
    the compute dtype (batch 1); a plan without a quantized cache: all tokens 16-bit."""
    layers, kv_heads, head_dim = _kv_shape(text_config)
    b = BYTES_PER_ELEMENT[plan.compute_dtype]
    per_token = 2 * kv_heads * head_dim  # keys and values
    parsed = parse(plan.kv_cache)
    if parsed is None:
        return layers * per_token * b * (quantized_tokens + residual_tokens)
    _, bits = parsed
    n = kv_heads * quantized_tokens * head_dim  # one tensor's elements
    packed = n * bits // 8 + 2 * (n // Q_GROUP_SIZE) * b
    return layers * (2 * packed + per_token * b * residual_tokens)


def window_bytes(text_config, plan: QuantPlan, prefill: int, generated: int) -> int:
    """The cache's largest size over one window: the prefill quantized, up to
    RESIDUAL_LENGTH − 1 generated tokens in the compute dtype (or everything quantized
    once the residual flushed), plus the decode step's transient of one layer's
    dequantized keys and values and their concatenation (2 × the layer in 16-bit)."""
    if parse(plan.kv_cache) is None:
        return stored_bytes(text_config, plan, prefill + generated, 0)
    residual = min(generated, RESIDUAL_LENGTH - 1)
    layers, kv_heads, head_dim = _kv_shape(text_config)
    transient = 2 * 2 * kv_heads * head_dim * (prefill + generated) * BYTES_PER_ELEMENT[plan.compute_dtype]
    held = max(stored_bytes(text_config, plan, prefill, residual),
               stored_bytes(text_config, plan, prefill + generated, 0))
    return held + transient


def measured_bytes(cache) -> int:
    """Bytes a generated cache holds (quantized tensors, their scales/zeros, residual)."""
    import torch

    total = 0
    for layer in cache.layers:
        tensors = [getattr(layer, "keys", None), getattr(layer, "values", None)]
        for q in (getattr(layer, "_quantized_keys", None), getattr(layer, "_quantized_values", None)):
            if isinstance(q, tuple):  # HQQ: (packed, meta)
                tensors += [q[0], q[1].get("scale"), q[1].get("zero")]
            elif q is not None:
                tensors.append(q)
        total += sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
    return total
