"""Quantization plans: validation, overrides, and the meta-device estimator (no weights)."""
import json
import subprocess
import sys

import pytest

from live.contract.cli import EXIT_USAGE
from quant.plans import (
    EDGE_6GB_BUDGET_BYTES,
    EDGE_6GB_WINDOW_BUDGET_BYTES,
    EDGE_8GB_BUDGET_BYTES,
    PLANS,
    PRECISIONS,
    QuantPlan,
    get_plan,
    parse_plans,
)


def test_named_plans_exist_and_keep_projectors_high_precision():
    assert list(PLANS) == ["fp16", "int8", "nf4", "nf4-dq", "edge-8gb", "edge-6gb", "edge-4gb",
                           "hqq4", "hqq3", "hqq2", "ao-int8", "ao-int8dq", "ao-int4"]
    for plan in PLANS.values():
        assert plan.projectors in ("fp32", "bf16", "fp16")
    assert PLANS["nf4-dq"].double_quant and not PLANS["nf4"].double_quant
    assert PLANS["int8"].llm == "int8" and PLANS["nf4"].llm == "nf4"


def test_bad_plan_name_lists_valid_plans():
    with pytest.raises(ValueError) as err:
        get_plan("int4")
    for name in PLANS:
        assert name in str(err.value)


def test_bad_precision_lists_valid_precisions():
    with pytest.raises(ValueError) as err:
        QuantPlan(llm="int4")
    for p in PRECISIONS:
        assert p in str(err.value)
    with pytest.raises(ValueError, match="projectors precision 'nf4' is not one of fp32, bf16, fp16, int8, hqq8, ao-int8, ao-int8dq$"):
        QuantPlan(projectors="nf4")  # projectors: at most 8-bit
    with pytest.raises(ValueError, match="embeddings precision 'nf4' is not one of fp32, bf16, fp16, host$"):
        QuantPlan(embeddings="nf4")  # a gather: float, or the host
    with pytest.raises(ValueError, match="lm_head precision 'host'"):
        get_plan("edge-8gb+lm_head=host")  # only the embeddings can live in host memory
    with pytest.raises(ValueError, match="share one dtype"):
        get_plan("fp16+embeddings=host+compute_dtype=bf16")  # a host table is in compute_dtype
    with pytest.raises(ValueError, match="valid plans"):
        parse_plans("fp16,nope")


def test_overrides_and_their_errors():
    plan = get_plan("nf4+vision=int8+double_quant=true")
    assert (plan.llm, plan.vision, plan.double_quant) == ("nf4", "int8", True)
    bf16 = get_plan("nf4+dtype=bf16")
    assert bf16.compute_dtype == bf16.embeddings == bf16.vision == "bf16" and bf16.llm == "nf4"
    with pytest.raises(ValueError, match="key one of"):
        get_plan("nf4+colour=blue")
    with pytest.raises(ValueError, match="true or false"):
        get_plan("nf4+double_quant=maybe")
    with pytest.raises(ValueError, match="share one dtype"):
        get_plan("fp16+projectors=fp32")
    with pytest.raises(ValueError, match="either nf4 or fp4"):
        get_plan("nf4+vision=fp4")


def test_edge_8gb_fits_7b_in_six_gigabytes():
    from quant.estimate import estimate_preset

    est = estimate_preset("7b", PLANS["edge-8gb"])
    assert est["total"] <= EDGE_8GB_BUDGET_BYTES, est["total"] / 1e9
    ref = estimate_preset("7b", PLANS["fp16"])
    assert 17.0e9 < ref["total"] < 18.0e9  # 8.79 B params in 16-bit
    assert est["slots"]["projectors"] == ref["slots"]["projectors"]  # untouched
    assert est["quant_state"] > 0 and ref["quant_state"] == 0


def test_estimator_rules_by_hand():
    from quant.estimate import linear_bytes

    # 128x96 nf4: 6144 bytes packed, 192 blocks of 64
    assert linear_bytes("nf4", 96, 128, PLANS["nf4"]) == (6144, 192 * 4 + 16 * 4)
    assert linear_bytes("nf4", 96, 128, PLANS["nf4-dq"]) == (6144, 192 + 4 + 4 + 256 * 4 + 16 * 4)
    assert linear_bytes("int8", 96, 128, PLANS["int8"]) == (96 * 128, 96 * 4)


def test_cli_json_and_errors():
    from quant.footprint import main

    out = subprocess.run(
        [sys.executable, "-m", "quant.footprint", "--preset", "0.5b", "--plan", "edge-8gb", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert set(result["components"]) == {"llm", "vision", "audio", "face", "projectors"}
    assert result["total"] == sum(result["slots"].values()) and result["host"] == 0
    assert result["precisions"]["lm_head"] == "fp16"  # 0.5B ties lm_head to the embeddings

    bad = subprocess.run(
        [sys.executable, "-m", "quant.footprint", "--preset", "7b", "--plan", "nf3"],
        capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == EXIT_USAGE
    lines = [line for line in bad.stderr.splitlines() if "kernels" not in line]
    assert len(lines) == 1 and f"valid plans: {', '.join(PLANS)}" in lines[0]
    assert main(["--preset", "13b", "--plan", "fp16"]) == EXIT_USAGE


def test_edge_6gb_fits_7b_weights_and_a_window_in_a_6gb_card():
    from quant.estimate import estimate_preset

    est = estimate_preset("7b", PLANS["edge-6gb"])
    edge8 = estimate_preset("7b", PLANS["edge-8gb"])
    assert est["total"] <= EDGE_6GB_BUDGET_BYTES, est["total"] / 1e9
    assert est["total"] + est["peak_window"] <= EDGE_6GB_WINDOW_BUDGET_BYTES
    # the table moves, nothing else changes: device + host = edge-8gb's bytes
    assert est["host"] == est["slots"]["embeddings"] == edge8["slots"]["embeddings"] == 152128 * 3584 * 2
    assert est["total"] + est["host"] == edge8["total"]
    assert est["components"]["llm"] == edge8["components"]["llm"] - est["host"]
    assert est["peak_window"] == edge8["peak_window"]  # the same rows reach the device


def test_cli_reports_host_and_peak_window():
    from quant.footprint import main

    out = subprocess.run(
        [sys.executable, "-m", "quant.footprint", "--preset", "7b", "--plan", "edge-6gb", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["host"] == result["slots"]["embeddings"] > 0
    assert result["total"] + result["host"] == sum(result["slots"].values())
    assert result["precisions"]["embeddings"] == "host (fp16)"
    assert 0 < result["peak_window"] == max(result["window"]["phases"].values())
    # host embeddings with a tied head (0.5b ties lm_head to the table): refused, one line, exit 2
    assert main(["--preset", "0.5b", "--plan", "edge-6gb"]) == EXIT_USAGE
