"""Quantization plans: a precision per component ("slot") of Omni-Emotion.

A plan is pure data (no torch, no bitsandbytes); `quant.load` applies it at load time
and `quant.estimate` prices it. Slots (module-name prefixes in `quant.layout`):

    llm         decoder layers + final norm (model.language_model minus embed_tokens)
    lm_head     the output projection (tied models: follows `embeddings`, see layout)
    embeddings  model.language_model.embed_tokens (an nn.Embedding: float, or `host`)
    vision      SigLIP vision tower
    audio       Whisper encoder
    face        FaceXFormer (Swin) encoder
    projectors  the three projectors, frame embeddings, image newline, fusion layer
                (float, or int8 for their Linear layers)

Precisions: `fp32`, `bf16`, `fp16` (plain dtypes) and the quantized precisions of the
methods in `quant.methods` (one file per method): bitsandbytes `int8`, `nf4`, `fp4`;
HQQ `hqq1` … `hqq8`; torchao `ao-int8`, `ao-int8dq`, `ao-int4`. Only `nn.Linear` layers
are quantized; everything else in a quantized slot (norms, convolutions, position
tables, biases) is kept in `compute_dtype`. Method options are plan-wide: the
bitsandbytes ones are fields (`double_quant`, `quant_storage`, `int8_threshold`), the
others sit in `options` (`hqq_group_size=32`, `ao_group_size=64`; `quant.methods.OPTIONS`).
`kv_cache` quantizes the decoder's KV cache while generating (transformers'
QuantizedCache, `quant.kv_cache`).

Placement: `embeddings="host"` keeps the input embedding table in host memory (pinned
where CUDA exists), in `compute_dtype`; the lookup runs there and only the gathered
rows move to the model's device (`quant.placement`). Every other slot lives on the
device. A tied lm_head cannot follow the table to the host: such a model is refused
at load and by the estimator (`quant.layout.check_placement`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from . import methods
from .dtypes import BYTES_PER_ELEMENT  # noqa: F401 - re-exported: plans' readers find it here

FLOAT_PRECISIONS = ("fp32", "bf16", "fp16")
QUANT_PRECISIONS = methods.QUANT_PRECISIONS  # int8, nf4, fp4, hqq1..hqq8, ao-int8, ao-int8dq, ao-int4
PRECISIONS = FLOAT_PRECISIONS + QUANT_PRECISIONS
HOST = "host"  # embeddings placement: the table in host memory, in compute_dtype
SLOTS = ("llm", "lm_head", "embeddings", "vision", "audio", "face", "projectors")
# What each slot allows. Embeddings are gathered, not multiplied (bitsandbytes' Linear
# layers do not apply): a float dtype on the device, or the host. The projectors are
# the paper's small trained bridges: float, or at most 8-bit (issue 13 measures int8
# projectors as an `edge-6gb` candidate; 4-bit stays refused).
ALLOWED = {slot: PRECISIONS for slot in SLOTS}
ALLOWED["embeddings"] = FLOAT_PRECISIONS + (HOST,)
ALLOWED["projectors"] = FLOAT_PRECISIONS + methods.EIGHT_BIT
# KV cache while generating: the 16-bit default, or transformers' QuantizedCache with the
# HQQ or quanto backend at 2 or 4 bits (`quant.kv_cache`)
KV_CACHES = ("none", "hqq2", "hqq4", "quanto2", "quanto4")
QUANT_STORAGES = ("uint8", "fp16", "bf16", "fp32")  # bnb_4bit_quant_storage
DEFAULT_INT8_THRESHOLD = 6.0  # LLM.int8 outlier threshold (bitsandbytes' default)
# Budget the `edge-8gb` plan must meet for the 7B preset (decimal GB): leaves ~2 GB of an
# 8 GB card for the CUDA context, activations and the KV cache (57 KB/token in 16-bit).
EDGE_8GB_BUDGET_BYTES = 6.0e9
# Budgets of `edge-6gb` for the 7B preset (issue 13, decimal GB): device-resident weights,
# and weights + the estimated peak of analysing one window (CUDA context aside, ~0.5 GB).
EDGE_6GB_BUDGET_BYTES = 4.8e9
EDGE_6GB_WINDOW_BUDGET_BYTES = 5.5e9
# Budgets of `edge-4gb` for the 7B preset (issue 22): a 4 GB card (GTX 1650, MX550/570).
EDGE_4GB_BUDGET_BYTES = 3.4e9
EDGE_4GB_WINDOW_BUDGET_BYTES = 4.0e9


@dataclass(frozen=True)
class QuantPlan:
    """A precision per slot (its method follows from it, `quant.methods`), the
    bitsandbytes options, the other methods' `options`, and the KV cache.

    double_quant: quantize the 4-bit absmax constants again (bnb_4bit_use_double_quant).
    compute_dtype: dtype 4-bit matmuls run in and that non-Linear tensors of quantized
        slots are stored in (bnb_4bit_compute_dtype).
    quant_storage: dtype the packed 4-bit data is stored as (bnb_4bit_quant_storage);
        the bytes are the same, only FSDP cares.
    int8_threshold: LLM.int8 outlier threshold (llm_int8_threshold).
    kv_cache: "none" or a quantized KV cache while generating (`quant.kv_cache`).
    options: ((key, value), ...) of `quant.methods.OPTIONS` (hqq_group_size, ...);
        `option(key)` reads one, with the method's default when unset.
    """

    name: str = "custom"
    llm: str = "fp16"
    lm_head: str = "fp16"
    embeddings: str = "fp16"
    vision: str = "fp16"
    audio: str = "fp16"
    face: str = "fp16"
    projectors: str = "fp16"
    double_quant: bool = False
    compute_dtype: str = "fp16"
    quant_storage: str = "uint8"
    int8_threshold: float = DEFAULT_INT8_THRESHOLD
    kv_cache: str = "none"
    options: tuple = ()  # ((key, value), ...) of quant.methods.OPTIONS; unset keys take defaults

    def option(self, key: str):
        """A method option's value (`quant.methods.OPTIONS`), its default when unset."""
        if key not in methods.OPTIONS:
            raise KeyError(f"unknown method option {key!r}; valid: {', '.join(methods.OPTIONS)}")
        return dict(self.options).get(key, methods.OPTIONS[key][1])

    def __post_init__(self):
        for slot in SLOTS:
            value = getattr(self, slot)
            valid = ALLOWED[slot]
            if value not in valid:
                raise ValueError(
                    f"plan {self.name!r}: {slot} precision {value!r} is not one of {', '.join(valid)}"
                )
        if self.compute_dtype not in FLOAT_PRECISIONS:
            raise ValueError(
                f"plan {self.name!r}: compute_dtype {self.compute_dtype!r} is not one of {', '.join(FLOAT_PRECISIONS)}"
            )
        if self.quant_storage not in QUANT_STORAGES:
            raise ValueError(
                f"plan {self.name!r}: quant_storage {self.quant_storage!r} is not one of {', '.join(QUANT_STORAGES)}"
            )
        if not isinstance(self.double_quant, bool):
            raise ValueError(f"plan {self.name!r}: double_quant must be true or false, got {self.double_quant!r}")
        if self.int8_threshold < 0:
            raise ValueError(f"plan {self.name!r}: int8_threshold must be >= 0, got {self.int8_threshold}")
        # Activations cross from encoder to projector to decoder without casts (e.g.
        # SigLIP's output goes straight into the projector's Linear, Qwen2's RMSNorm
        # multiplies in its weight's dtype), so every float tensor of the model must share
        # one dtype: float slots and the compute dtype of quantized ones. Lifting this
        # needs casts in model/net/modeling.py (docs/quantization.md).
        activation = {p if p in FLOAT_PRECISIONS else self.compute_dtype for p in self.dtypes().values()}
        if len(activation) > 1:
            raise ValueError(
                f"plan {self.name!r}: float slots and compute_dtype must share one dtype, got "
                f"{sorted(activation)}; set them all, e.g. +dtype={self.compute_dtype}"
            )
        if self.kv_cache not in KV_CACHES:
            raise ValueError(f"plan {self.name!r}: kv_cache {self.kv_cache!r} is not one of {', '.join(KV_CACHES)}")
        for key, value in self.options:
            if key not in methods.OPTIONS:
                raise ValueError(f"plan {self.name!r}: unknown option {key!r}; valid: {', '.join(methods.OPTIONS)}")
            kind = methods.OPTIONS[key][0]
            if type(value) is not kind:
                raise ValueError(f"plan {self.name!r}: {key} must be a {kind.__name__}, got {value!r}")
        for method in methods.METHODS.values():
            method.validate(self)

    @property
    def float_dtype(self) -> str:
        """The one float dtype of the plan (float slots, compute, non-Linear tensors)."""
        return self.dtypes()["embeddings"]  # always float; validated equal to the rest

    @property
    def host_embeddings(self) -> bool:
        return self.embeddings == HOST

    def precisions(self) -> dict[str, str]:
        """{slot: value as written} (`embeddings` may be "host")."""
        return {slot: getattr(self, slot) for slot in SLOTS}

    def dtypes(self) -> dict[str, str]:
        """{slot: storage precision}: as `precisions`, with host embeddings stored in
        `compute_dtype`."""
        out = self.precisions()
        if out["embeddings"] == HOST:
            out["embeddings"] = self.compute_dtype
        return out

    def slot_methods(self) -> dict[str, str]:
        """{slot: method name} of the quantized slots."""
        return {s: methods.BY_PRECISION[p].NAME for s, p in self.precisions().items() if p in methods.BY_PRECISION}

    def to_dict(self) -> dict:
        """Every field, with `options` as {key: value} for every method option (defaults filled in)."""
        out = asdict(self)
        out["options"] = {key: self.option(key) for key in methods.OPTIONS}
        return out


QUANTIZABLE = ("llm", "lm_head", "vision", "audio", "face")  # slots that take any quantized precision


def _every(name: str, precision: str, dtype: str = "fp16") -> "QuantPlan":
    """`precision` on every slot of QUANTIZABLE, the rest in `dtype`."""
    floats = {slot: dtype for slot in SLOTS if slot not in QUANTIZABLE}
    return QuantPlan(name=name, compute_dtype=dtype, **floats, **dict.fromkeys(QUANTIZABLE, precision))


# The named plans. `fp16` is the reference every other plan is compared with.
PLANS: dict[str, QuantPlan] = {
    "fp16": QuantPlan(name="fp16"),
    # LLM.int8 on the decoder layers only, as transformers' load_in_8bit does by default.
    "int8": QuantPlan(name="int8", llm="int8"),
    # QLoRA-style: decoder layers nf4, the rest 16-bit.
    "nf4": QuantPlan(name="nf4", llm="nf4"),
    "nf4-dq": QuantPlan(name="nf4-dq", llm="nf4", double_quant=True),
    # The paper's 7B model on an 8 GB card, <= 6.0 GB of weights (docs/quantization.md):
    # the encoders are ~1.0 B parameters, so 16-bit encoders alone would take 2.1 GB;
    # they go to nf4, while lm_head (the layer most sensitive to quantization, whose
    # error lands directly on the next-token distribution) keeps 8 bits.
    "edge-8gb": QuantPlan(
        name="edge-8gb",
        llm="nf4",
        lm_head="int8",
        vision="nf4",
        audio="nf4",
        face="fp16",
        projectors="fp16",
        double_quant=True,
    ),
    # The 7B model on a 6 GB laptop card: edge-8gb with the input embedding table (1.09 GB
    # in 16-bit) in host memory. Of the candidates measured in docs/quantization.md (host
    # embeddings, 4-bit lm_head, 4-bit face encoder, int8 projectors) it is the only one
    # that reaches <= 4.8 GB on the device by itself, and it costs no agreement at all
    # (a gather is exact wherever it runs); the others would all be needed together and
    # still miss (5.38 GB).
    "edge-6gb": QuantPlan(
        name="edge-6gb",
        llm="nf4",
        lm_head="int8",
        embeddings=HOST,
        vision="nf4",
        audio="nf4",
        face="fp16",
        projectors="fp16",
        double_quant=True,
    ),
    # The 7B model on a 4 GB card (docs/quantization.md, "edge-4gb"): edge-6gb with the
    # decoder body in 2-bit HQQ (groups of 64) and lm_head nf4. The decoder is 6.5 B of
    # the 8.8 B parameters: at 3 bits or more it alone takes >= 2.7 GB and the rest no
    # longer fits 3.4 GB. lm_head goes to bitsandbytes nf4, not HQQ: its one-row logits
    # run as a gemv, while HQQ would dequantize the whole 1.09 GB head for every token.
    # The encoders keep nf4 and the face encoder and projectors 16-bit (issue 13: face
    # nf4 cost most KL on the 0.5b-sized model). Quality must be measured with real weights.
    "edge-4gb": QuantPlan(
        name="edge-4gb",
        llm="hqq2",
        lm_head="nf4",
        embeddings=HOST,
        vision="nf4",
        audio="nf4",
        face="fp16",
        projectors="fp16",
        double_quant=True,
    ),
    # One method at one width on every slot that can take it (llm, lm_head, vision, audio,
    # face; the projectors stay 16-bit, as 4-bit is refused there): the method comparisons.
    **{f"hqq{bits}": _every(f"hqq{bits}", f"hqq{bits}") for bits in (4, 3, 2)},
    "ao-int8": _every("ao-int8", "ao-int8"),
    "ao-int8dq": _every("ao-int8dq", "ao-int8dq"),
    # torchao's int4 kernels take bf16 activations: the whole plan is bf16
    "ao-int4": _every("ao-int4", "ao-int4", dtype="bf16"),
}

_OPTION_TYPES = {"double_quant": bool, "compute_dtype": str, "quant_storage": str, "int8_threshold": float,
                 **{key: spec[0] for key, spec in methods.OPTIONS.items()}}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _coerce(key: str, text: str):
    kind = _OPTION_TYPES.get(key, str)
    if kind is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"{key} must be true or false, got {text!r}")
    if kind in (float, int):
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"{key} must be {'a number' if kind is float else 'an integer'}, got {text!r}") from None
    return text


def get_plan(spec: str | QuantPlan) -> QuantPlan:
    """A named plan, or a named plan with overrides: `NAME+key=value+...`.

    Keys are slots (`nf4+vision=int8`), options (`nf4+double_quant=true`) or `dtype`,
    which sets every float slot and the compute dtype (`nf4+dtype=bf16`); later keys
    win. Unknown names, keys or values raise ValueError listing
    the valid ones.
    """
    if isinstance(spec, QuantPlan):
        return spec
    base, *overrides = [part.strip() for part in str(spec).split("+")]
    if base not in PLANS:
        raise ValueError(f"unknown plan {base!r}; valid plans: {', '.join(PLANS)}")
    plan = PLANS[base]
    if not overrides:
        return plan
    valid_keys = [f.name for f in fields(QuantPlan) if f.name not in ("name", "options")] + ["dtype"]
    valid_keys += list(methods.OPTIONS)
    changes, options = {}, dict(plan.options)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in valid_keys:
            raise ValueError(f"bad plan override {item!r} in {spec!r}; use key=value with key one of {', '.join(valid_keys)}")
        if key == "dtype":  # shorthand: every float slot and the compute dtype
            if value not in FLOAT_PRECISIONS:
                raise ValueError(f"dtype {value!r} is not one of {', '.join(FLOAT_PRECISIONS)}")
            changes.update({s: value for s in SLOTS if getattr(plan, s) in FLOAT_PRECISIONS}, compute_dtype=value)
            continue
        if key in methods.OPTIONS:
            options[key] = _coerce(key, value)
            continue
        changes[key] = _coerce(key, value)
    return replace(plan, name=str(spec), options=tuple(sorted(options.items())), **changes)


def parse_plans(text: str) -> list[QuantPlan]:
    """`"fp16,int8,nf4+vision=int8"` → plans, each validated (ValueError on the first bad one)."""
    specs = [s.strip() for s in text.split(",") if s.strip()]
    if not specs:
        raise ValueError(f"no plans given; valid plans: {', '.join(PLANS)}")
    return [get_plan(s) for s in specs]
