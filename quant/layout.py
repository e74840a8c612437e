"""Which module of the model belongs to which plan slot, and which Linear layers a plan
quantizes. Shared by the loader (`quant.load`) and the estimator (`quant.estimate`) so
the two can never disagree about what is quantized.

Only modules whose type is exactly `nn.Linear` are quantized — the rule transformers'
`replace_with_bnb_linear` uses — so subclasses such as `nn.MultiheadAttention`'s
`out_proj` (which the attention reads as a raw tensor) stay float.
"""
from __future__ import annotations

from torch import nn

from model.checkpoint.loading import COMPONENT_PREFIXES, COMPONENTS, component_of

from .plans import QUANT_PRECISIONS, SLOTS, QuantPlan

EMBEDDINGS_PREFIX = "model.language_model.embed_tokens"
LM_HEAD_PREFIX = "lm_head"


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def slot_of(name: str) -> str:
    """Plan slot of a parameter/module name (`lm_head.weight` → `lm_head`)."""
    if _under(name, LM_HEAD_PREFIX):
        return "lm_head"
    if _under(name, EMBEDDINGS_PREFIX):
        return "embeddings"
    return component_of(name)  # llm (decoder body), vision, audio, face, projectors


def component_of_slot(slot: str) -> str:
    """Plan slot → model component of `model.checkpoint.loading.COMPONENTS`."""
    return "llm" if slot in ("llm", "lm_head", "embeddings") else slot


def slot_prefixes(slot: str) -> tuple[str, ...]:
    """Top-level module prefixes that make up a slot (for skip lists)."""
    if slot == "lm_head":
        return (LM_HEAD_PREFIX,)
    if slot == "embeddings":
        return (EMBEDDINGS_PREFIX,)
    if slot == "llm":
        return ("model.language_model",)  # its embed_tokens is no Linear, so never converted
    return COMPONENT_PREFIXES[slot]


class PlacementError(ValueError):
    """A plan's placement cannot work on this model (host embeddings with a tied head)."""


def check_placement(plan: QuantPlan, tied_lm_head: bool) -> None:
    """Refuse host embeddings for a model whose lm_head is tied to them.

    A tied head *is* the embedding table: it cannot stay on the device while the table
    moves to the host, and running the output projection on the host would cost a
    152k-row matmul in RAM per token. Untying at load would keep a device copy of the
    table for the head — nothing saved — so the plan is refused instead."""
    if tied_lm_head and plan.host_embeddings:
        raise PlacementError(
            f"plan {plan.name!r} puts the input embeddings in host memory, but this model ties "
            "lm_head to them (tie_word_embeddings: true, e.g. the 0.5b preset); a tied head cannot "
            "stay on the device without its table. Keep embeddings on the device for tied models "
            f"(e.g. +embeddings={plan.compute_dtype})"
        )


def effective_precisions(plan: QuantPlan, tied_lm_head: bool) -> dict[str, str]:
    """The plan's slot storage precisions as applied to a model (host embeddings: their
    dtype, `compute_dtype`).

    A tied `lm_head` shares its weight with the embeddings, which are float: it follows
    the embeddings' precision (quantizing it would untie or corrupt the embedding).
    Raises PlacementError for a placement the model cannot take (`check_placement`)."""
    check_placement(plan, tied_lm_head)
    precisions = plan.dtypes()
    if tied_lm_head:
        precisions["lm_head"] = precisions["embeddings"]
    return precisions


def host_slots(plan: QuantPlan) -> tuple[str, ...]:
    """Slots whose tensors live in host memory under `plan`."""
    return ("embeddings",) if plan.host_embeddings else ()


def is_tied(model: nn.Module) -> bool:
    head = model.get_submodule(LM_HEAD_PREFIX)
    embed = model.get_submodule(EMBEDDINGS_PREFIX)
    return head.weight is embed.weight or bool(getattr(model.config, "tie_word_embeddings", False))


def _planned(model: nn.Module, plan: QuantPlan):
    """(name, precision, method, unsupported reason or None) of every `nn.Linear` in a
    quantized slot."""
    from .methods import method_of

    precisions = effective_precisions(plan, is_tied(model))
    for name, module in model.named_modules():
        if type(module) is nn.Linear:
            precision = precisions[slot_of(name)]
            if precision in QUANT_PRECISIONS:
                method = method_of(precision)
                yield name, precision, method.supports(precision, module.out_features, module.in_features, plan)


def quant_targets(model: nn.Module, plan: QuantPlan) -> dict[str, str]:
    """{module name: precision} for every `nn.Linear` the plan quantizes (float model).
    A layer whose shape its method cannot take stays float (`unsupported_layers`)."""
    return {name: precision for name, precision, why in _planned(model, plan) if why is None}


def unsupported_layers(model: nn.Module, plan: QuantPlan) -> dict[str, str]:
    """{module name: reason} of the layers in quantized slots that stay float because
    their method cannot take their shape (e.g. HQQ groups that do not divide the weight)."""
    return {name: f"{precision}: {why}" for name, precision, why in _planned(model, plan) if why is not None}


def primary_precision(model: nn.Module, targets: dict[str, str]) -> str | None:
    """The bitsandbytes precision covering the most weight elements, for a plan that
    uses bitsandbytes only: transformers applies it while loading (streamed, so the
    float weights never sit whole in memory); the rest are converted directly
    afterwards. None when nothing is quantized or another method is in the plan (then
    every layer is converted directly, `quant.load`)."""
    from .methods import bnb

    if any(p not in bnb.PRECISIONS for p in targets.values()):
        return None
    elements: dict[str, int] = {}
    for name, precision in targets.items():
        elements[precision] = elements.get(precision, 0) + model.get_submodule(name).weight.numel()
    return max(elements, key=elements.get) if elements else None


def skip_modules(plan: QuantPlan, precisions: dict[str, str], primary: str) -> list[str]:
    """Every module prefix transformers must NOT convert to `primary`, listed in full.

    Passing any skip list to transformers replaces its default exclusion of `lm_head`,
    so `lm_head` is listed here whenever it is not `primary` — never left implicit."""
    skipped = []
    for slot in SLOTS:
        if precisions[slot] != primary:
            skipped.extend(slot_prefixes(slot))
    return sorted(set(skipped))


def slot_totals(per_name: dict[str, int], host: tuple[str, ...] = ()) -> dict:
    """{name: bytes} → bytes per slot (wherever it lives), device bytes per component,
    `total` (device-resident) and `host` (bytes of the `host` slots)."""
    slots = dict.fromkeys(SLOTS, 0)
    for name, n in per_name.items():
        slots[slot_of(name)] += n
    components = dict.fromkeys(COMPONENTS, 0)
    for slot, n in slots.items():
        if slot not in host:
            components[component_of_slot(slot)] += n
    on_host = sum(slots[s] for s in host)
    return {"slots": slots, "components": components, "total": sum(slots.values()) - on_host, "host": on_host}
