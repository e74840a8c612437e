"""HQQ and torchao methods on the tiny model (CPU): each layer equals the library's own
(HQQLinear, torchao's quantize_) bit for bit, the estimator equals the loaded model to
the byte for every method and bit width, CUDA-only options are refused, and the
quantized KV cache is priced as it is stored."""
import copy
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from live.contract.cli import EXIT_USAGE
from quant.estimate import estimate_checkpoint, linear_bytes, measure
from quant.load import PlanLoadError, load_model
from quant.plans import EDGE_4GB_BUDGET_BYTES, EDGE_4GB_WINDOW_BUDGET_BYTES, PLANS, get_plan

torch.manual_seed(0)


@pytest.fixture(scope="module")
def float_model(tiny_checkpoint):
    model, _ = load_model(tiny_checkpoint, "fp16", "cpu")
    return model


def _inputs(layer: nn.Module, dtype=torch.float16) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(3, layer.in_features, generator=gen).to(dtype)


def _exact_estimate(tiny, model):
    est, got = estimate_checkpoint(tiny, model.quant_plan), measure(model)
    assert (est["total"], est["host"], est["slots"], est["quant_state"]) == \
        (got["total"], got["host"], got["slots"], got["quant_state"])
    return est


HQQ_PLANS = ["hqq4", "hqq3", "hqq2", "fp16+llm=hqq8+face=hqq1+projectors=hqq8",
             "hqq4+hqq_axis=0+hqq_group_size=32+hqq_optimize=false+hqq_round_zero=false"]


@pytest.mark.parametrize("spec", HQQ_PLANS)
def test_hqq_layers_equal_the_librarys_hqqlinear_and_the_estimate_is_exact(tiny_checkpoint, float_model, spec):
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

    plan = get_plan(spec)
    model, _ = load_model(tiny_checkpoint, plan, "cpu")
    targets = model.quant_layout["targets"]
    assert {p for p in targets.values()} >= {p for p in plan.precisions().values() if p.startswith("hqq")}
    checked = 0
    for name, precision in targets.items():
        layer = model.get_submodule(name)
        assert isinstance(layer, HQQLinear)
        cfg = BaseQuantizeConfig(nbits=int(precision[3:]), group_size=plan.option("hqq_group_size"),
                                 axis=plan.option("hqq_axis"))
        cfg["weight_quant_params"]["optimize"] = plan.option("hqq_optimize")
        if plan.option("hqq_round_zero") != "auto":
            cfg["weight_quant_params"]["round_zero"] = plan.option("hqq_round_zero") == "true"
        ref = HQQLinear(copy.deepcopy(float_model.get_submodule(name)), cfg, compute_dtype=torch.float16,
                        device="cpu")
        assert torch.equal(layer.W_q, ref.W_q), name
        assert torch.equal(layer.meta["scale"], ref.meta["scale"]) and torch.equal(layer.meta["zero"], ref.meta["zero"])
        x = _inputs(ref)
        with torch.inference_mode():
            assert torch.equal(layer(x), ref(x)), name
        checked += 1
    assert checked == len(targets) > 0
    est = _exact_estimate(tiny_checkpoint, model)
    assert est["quant_state"] > 0  # scale, zero and bias live outside the parameters


@pytest.mark.parametrize("spec", ["ao-int8", "ao-int8dq", "fp16+llm=ao-int8dq+projectors=ao-int8"])
def test_torchao_layers_equal_quantize_and_the_estimate_is_exact(tiny_checkpoint, float_model, spec):
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

    model, _ = load_model(tiny_checkpoint, spec, "cpu")
    targets = model.quant_layout["targets"]
    assert targets
    configs = {"ao-int8": Int8WeightOnlyConfig, "ao-int8dq": Int8DynamicActivationInt8WeightConfig}
    for name, precision in targets.items():
        layer = model.get_submodule(name)
        ref = copy.deepcopy(float_model.get_submodule(name))
        quantize_(ref, configs[precision]())
        assert type(layer.weight) is type(ref.weight)
        for part in ("qdata", "scale", "zero_point"):
            assert torch.equal(getattr(layer.weight, part), getattr(ref.weight, part)), (name, part)
        assert (layer.weight.act_quant_kwargs is None) == (precision == "ao-int8")
        x = _inputs(ref)
        with torch.inference_mode():
            assert torch.equal(layer(x), ref(x)), name
    _exact_estimate(tiny_checkpoint, model)


def test_edge_4gb_loads_on_the_tiny_model_exactly_priced(tiny_checkpoint):
    model, _ = load_model(tiny_checkpoint, "edge-4gb", "cpu")
    kinds = {type(model.get_submodule(n)).__name__ for n in model.quant_layout["targets"]}
    assert kinds == {"HQQLinear", "Linear4bit"}
    est = _exact_estimate(tiny_checkpoint, model)
    assert est["host"] == est["slots"]["embeddings"] > 0


def test_unsupported_shapes_stay_float_in_load_and_estimate(tiny_checkpoint):
    # 2-bit HQQ packs four group rows per byte: layers whose group count is not a
    # multiple of 4 stay float, the same ones for the loader and the estimator
    model, _ = load_model(tiny_checkpoint, "hqq2", "cpu")
    skipped = model.quant_layout["unsupported"]
    assert skipped and all("hqq2" in why for why in skipped.values())
    for name in skipped:
        assert type(model.get_submodule(name)) is nn.Linear
    assert estimate_checkpoint(tiny_checkpoint, model.quant_plan)["unsupported"] == skipped
    _exact_estimate(tiny_checkpoint, model)


def test_torchao_int4_is_refused_on_the_cpu_and_priced_by_hand(tiny_checkpoint, tmp_path):
    plan = PLANS["ao-int4"]
    with pytest.raises(PlanLoadError, match=r"llm=ao-int4 .* no cpu kernel"):
        load_model(tiny_checkpoint, plan, "cpu")
    assert issubclass(PlanLoadError, ValueError)  # live.run --plan reports it as one error line
    # plain packing: two 4-bit values per byte; a scale and a zero per 128 inputs per row, bf16
    assert linear_bytes("ao-int4", 3584, 18944, plan) == (3584 * 18944 // 2 + 2 * (18944 // 128) * 3584 * 2, 0)
    assert linear_bytes("ao-int4", 64, 256, get_plan("ao-int4+ao_group_size=32")) == (64 * 128 + 2 * 8 * 64 * 2, 0)
    with pytest.raises(ValueError, match="needs compute_dtype bf16"):
        get_plan("fp16+llm=ao-int4")
    # the harness refuses it before any work: one error line, exit 2
    out = subprocess.run([sys.executable, "-m", "quant.experiments", "--model", str(tiny_checkpoint), "--plans",
                          "fp16,ao-int4", "--source", __file__, "--out", str(tmp_path / "o"), "--device", "cpu"],
                         capture_output=True, text=True, timeout=300)
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert out.returncode == EXIT_USAGE and len(lines) == 1 and "no cpu kernel" in lines[0], out.stderr


def test_byte_rules_by_hand():
    plan = get_plan("hqq4")
    # 64x96, groups of 64 along the rows: 96 groups → 48 packed rows of 64 bytes; scale+zero fp16
    assert linear_bytes("hqq4", 64, 96, plan) == (48 * 64, 2 * 96 * 2)
    assert linear_bytes("hqq2", 64, 96, plan) == (24 * 64, 2 * 96 * 2)
    assert linear_bytes("hqq8", 64, 96, plan) == (96 * 64, 2 * 96 * 2)
    assert linear_bytes("hqq1", 64, 96, plan) == (12 * 64, 2 * 96 * 2)
    assert linear_bytes("hqq3", 64, 96, plan) == (10 * 64 * 4, 2 * 96 * 2)  # ceil(96/10) int32 rows
    axis0 = get_plan("hqq4+hqq_axis=0+hqq_group_size=32")
    assert linear_bytes("hqq3", 64, 96, axis0) == (4 * 192 * 4, 2 * 192 * 2)  # (32, 192): ceil(32/10) rows
    assert linear_bytes("ao-int8", 64, 96, plan) == (64 * 96 + 64 * 5, 0)
    assert linear_bytes("nf4", 96, 128, get_plan("nf4")) == (6144, 192 * 4 + 16 * 4)


def test_plan_validation_names_slot_and_allowed_values():
    with pytest.raises(ValueError, match="projectors precision 'hqq4' is not one of .*hqq8, ao-int8, ao-int8dq$"):
        get_plan("fp16+projectors=hqq4")
    with pytest.raises(ValueError, match="hqq_group_size must be a positive multiple of 8, got 12"):
        get_plan("hqq4+hqq_group_size=12")
    with pytest.raises(ValueError, match="hqq_axis must be 0 or 1"):
        get_plan("hqq4+hqq_axis=2")
    with pytest.raises(ValueError, match="ao_group_size must be one of 32, 64, 128, 256"):
        get_plan("ao-int8+ao_group_size=100")
    with pytest.raises(ValueError, match="kv_cache 'hqq3' is not one of none, hqq2, hqq4, quanto2, quanto4"):
        get_plan("fp16+kv_cache=hqq3")
    plan = get_plan("hqq3+hqq_group_size=128")
    assert plan.option("hqq_group_size") == 128 and plan.to_dict()["options"]["hqq_axis"] == 1
    assert PLANS["edge-4gb"].slot_methods() == {"llm": "hqq", "lm_head": "bitsandbytes", "vision": "bitsandbytes",
                                                 "audio": "bitsandbytes"}


def test_every_plan_prices_the_7b_preset_and_edge_4gb_fits():
    out = subprocess.run([sys.executable, "-m", "quant.footprint", "--preset", "7b", "--plan", "edge-4gb", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["total"] <= EDGE_4GB_BUDGET_BYTES
    assert result["total"] + result["peak_window"] <= EDGE_4GB_WINDOW_BUDGET_BYTES
    assert result["precisions"]["llm"] == "hqq2" and result["host"] == result["slots"]["embeddings"] > 0
    assert result["unsupported"] == {}  # every 7B layer takes its method
    from quant.footprint import estimate

    totals = {}
    for name in PLANS:  # what `quant.footprint --preset 7b --plan NAME --json` prints, for every plan
        result = json.loads(json.dumps(estimate("7b", None, name)))
        totals[name] = result["total"]
        assert result["total"] + result["host"] == sum(result["slots"].values())
    assert totals["hqq2"] < totals["hqq3"] < totals["hqq4"] < totals["ao-int8"] < totals["fp16"]
    assert totals["ao-int8"] == totals["ao-int8dq"] and totals["ao-int4"] < totals["ao-int8"]


def test_quantized_kv_cache_is_stored_as_priced(tiny_checkpoint):
    import numpy as np

    from model.net.processor import Clip
    from quant.kv_cache import RESIDUAL_LENGTH, available, measured_bytes, stored_bytes

    model, processor = load_model(tiny_checkpoint, "fp16+kv_cache=hqq4", "cpu")
    assert model.generation_config.cache_implementation == "quantized"
    rng = np.random.default_rng(0)
    clip = Clip(frames=rng.integers(0, 255, (8, 64, 64, 3), dtype=np.uint8),
                faces=rng.integers(0, 255, (8, 224, 224, 3), dtype=np.uint8),
                audio=(rng.standard_normal(16000) * 0.1).astype(np.float32))
    batch = processor([{"role": "user", "content": "What emotion?"}], clip)
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=4, do_sample=False, return_dict_in_generate=True)
    cache = getattr(out, "cache", None) or out.past_key_values
    assert type(cache).__name__ == "QuantizedCache"
    prefill = batch["input_ids"].shape[1]
    text = model.config.text_config
    # the prefill quantized at once; the 3 decode steps' tokens in the residual (< RESIDUAL_LENGTH)
    assert 3 < RESIDUAL_LENGTH
    assert measured_bytes(cache) == stored_bytes(text, model.quant_plan, prefill, 3)
    assert measured_bytes(cache) < stored_bytes(text, PLANS["fp16"], prefill + 3, 0)
    # priced in the window peak: for the 7B window (2,128 + 96 tokens) a 4-bit cache is a
    # third of the 16-bit one even with its 16-bit residual and decode transient (on the
    # tiny model's short prompt those dominate, so it is not smaller there)
    from quant.estimate import estimate_preset

    est = estimate_preset("7b", get_plan("edge-4gb+kv_cache=hqq4"))
    ref = estimate_preset("7b", PLANS["edge-4gb"])
    assert est["window"]["kv_cache"]["bytes"] < 0.5 * ref["window"]["kv_cache"]["bytes"]
    assert est["peak_window"] < ref["peak_window"] and est["total"] == ref["total"]
    # quanto is not installed here: refused with the reason, before anything loads
    if available("quanto"):
        with pytest.raises(PlanLoadError, match="optimum.quanto"):
            load_model(tiny_checkpoint, "fp16+kv_cache=quanto4", "cpu")
