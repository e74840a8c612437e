"""Every bitsandbytes plan loads the tiny model on the CPU, quantizes exactly the planned
modules, matches the estimator to the byte, and generates (HQQ and torchao:
test_quant_methods.py)."""
import sys

import numpy as np
import pytest
import torch
from torch import nn

from model.net.processor import Clip
from quant.estimate import estimate_checkpoint, measure
from quant.load import load_model, resolve
from quant.layout import slot_of
from quant.plans import PLANS, get_plan

TOLERANCE = 0.03  # the bound on |estimate - measured| / measured


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return tiny_checkpoint


@pytest.fixture(scope="module")
def clip():
    rng = np.random.default_rng(0)
    return Clip(
        frames=rng.integers(0, 255, (8, 64, 64, 3), dtype=np.uint8),
        faces=rng.integers(0, 255, (8, 224, 224, 3), dtype=np.uint8),
        audio=(rng.standard_normal(16000) * 0.1).astype(np.float32),
    )


def expected_kind(plan, name):
    """Module type a plan should give the nn.Linear called `name`."""
    precision = plan.precisions()[slot_of(name)]
    return {"int8": "Linear8bitLt", "nf4": "Linear4bit", "fp4": "Linear4bit"}.get(precision, "Linear")


BNB_PLANS = [name for name, plan in PLANS.items() if set(plan.slot_methods().values()) <= {"bitsandbytes"}]


@pytest.mark.parametrize("name", BNB_PLANS + ["nf4+llm=fp4+dtype=bf16+vision=int8"])
def test_plan_loads_quantizes_estimates_and_generates(tiny, clip, name):
    plan = get_plan(name)
    model, processor = load_model(tiny, plan, "cpu")
    import bitsandbytes as bnb

    # nn.MultiheadAttention's out_proj (a Linear subclass it reads raw) is never converted
    linears = {n: m for n, m in model.named_modules()
               if isinstance(m, nn.Linear) and not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear)}
    assert linears
    for n, m in linears.items():
        assert type(m).__name__ == expected_kind(plan, n), (n, type(m).__name__)
        if isinstance(m, bnb.nn.Linear4bit):
            assert m.weight.quant_type == plan.precisions()[slot_of(n)]
            assert m.weight.quant_state.nested == plan.double_quant
    # the skip list always names lm_head when it is not the primary precision
    layout = model.quant_layout
    if layout["primary"] and plan.lm_head != layout["primary"]:
        assert "lm_head" in layout["skip"]

    est = estimate_checkpoint(tiny, plan)
    got = measure(model)
    assert abs(est["total"] - got["total"]) <= TOLERANCE * got["total"]
    # what get_memory_footprint() sees (parameters + buffers) is predicted too
    assert abs(est["params_buffers"] - got["footprint"]) <= TOLERANCE * got["footprint"]
    for slot, n in got["slots"].items():
        assert abs(est["slots"][slot] - n) <= TOLERANCE * max(n, 1), slot
    # on the tiny model the estimate is exact, on the device and on the host
    assert (est["total"], est["host"], est["slots"]) == (got["total"], got["host"], got["slots"])
    assert est["host"] == (est["slots"]["embeddings"] if plan.host_embeddings else 0)

    batch = processor([{"role": "user", "content": "What emotion?"}], clip)
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > batch["input_ids"].shape[1]
    assert measure(model)["total"] == got["total"]  # no re-packing after a forward on the CPU


def test_fp16_plan_has_no_bitsandbytes_layers(tiny):
    model, _ = load_model(tiny, "fp16")
    assert not any("Linear4bit" in type(m).__name__ or "8bit" in type(m).__name__ for m in model.modules())
    assert {p.dtype for p in model.parameters()} == {torch.float16}


def test_resolve_lists_every_skipped_component(tiny):
    from model.net.config import OmniEmotionConfig

    layout = resolve(OmniEmotionConfig.from_pretrained(tiny), PLANS["edge-8gb"])
    assert layout["primary"] == "nf4"
    # lm_head is int8 (converted directly), face and projectors stay fp16
    assert "lm_head" in layout["skip"] and "model.face_encoder" in layout["skip"]
    assert "model.audio_projector" in layout["skip"] and "model.vision_tower" not in layout["skip"]
    assert layout["targets"]["lm_head"] == "int8"


def test_bad_device_and_missing_checkpoint(tiny, tmp_path):
    from quant.load import PlanLoadError

    if not torch.cuda.is_available():
        with pytest.raises(PlanLoadError, match="CUDA is not available"):
            load_model(tiny, "nf4", "cuda")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path, "nf4")
    with pytest.raises(ValueError, match="valid plans"):
        load_model(tiny, "q4")


def test_quant_package_does_not_import_bitsandbytes():
    import subprocess

    code = (
        "import sys, quant, quant.plans, quant.load, quant.estimate, quant.experiments; "
        "from quant import load_model; print('bitsandbytes' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr
    # plans and the method registry are pure data: no torch, no quantization library
    # (transformers itself imports hqq and torchao when they are installed)
    code = ("import sys, quant.plans, quant.methods; "
            "print(any(m in sys.modules for m in ('torch', 'bitsandbytes', 'hqq', 'torchao')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr
