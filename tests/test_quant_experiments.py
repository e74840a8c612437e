"""The plan-comparison harness end to end on the tiny model and a short real clip."""
import json

import pytest

from live.contract.cli import EXIT_USAGE
from model.checkpoint.loading import build_tiny
from quant.estimate import estimate_checkpoint
from quant.experiments import main, run_experiments
from quant.plans import get_plan

PLANS = ["fp16", "nf4-dq", "edge-8gb", "int8", "edge-6gb", "hqq4", "ao-int8dq"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("qexp")
    build_tiny(root / "tiny")
    from tests.media import make_clip

    make_clip(root / "clip.mp4", seconds=5.0, size=(320, 240), face_scale=120)
    return root


def test_harness_writes_results_table_and_plot(setup, monkeypatch):
    import quant.load

    real = quant.load.load_model

    def flaky(path, plan, device):  # a plan that cannot load here, e.g. a CUDA-only option
        if plan.name == "int8":
            raise quant.load.PlanLoadError("int8 needs CUDA in this test")
        return real(path, plan, device)

    monkeypatch.setattr(quant.load, "load_model", flaky)
    out = setup / "out"
    results = run_experiments(setup / "tiny", PLANS, setup / "clip.mp4", out, max_windows=2,
                              max_new_tokens=4, faces=False, progress=False)
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["reference"] == "fp16" and on_disk["windows"] == 2
    assert on_disk["window_source"].startswith("live.engine")
    by_name = {p["name"]: p for p in on_disk["plans"]}
    assert [p["name"] for p in on_disk["plans"]] == PLANS
    assert by_name["int8"]["status"] == "failed" and "needs CUDA" in by_name["int8"]["error"]
    for name in PLANS[:3]:
        p = by_name[name]
        assert p["status"] == "ok", p.get("error")
        w = p["weights"]
        assert w["estimated"] == estimate_checkpoint(setup / "tiny", get_plan(name))["total"]
        assert abs(w["estimated"] - w["measured"]) <= 0.03 * w["measured"]
        assert p["peak_bytes"] >= 0 and p["prefill_s"] > 0 and len(p["windows"]) == 2
        assert p["kl_mean"] >= 0 and 0 <= p["text_similarity"] <= 1 and 0 <= p["label_agreement"] <= 1
    ref = by_name["fp16"]
    assert ref["kl_mean"] == 0 and ref["text_similarity"] == 1 and ref["label_agreement"] == 1
    assert by_name["edge-8gb"]["weights"]["measured"] < ref["weights"]["measured"]
    edge6, edge8 = by_name["edge-6gb"], by_name["edge-8gb"]
    assert edge6["status"] == "ok" and edge6["kl_mean"] == edge8["kl_mean"]  # the gather is exact
    assert edge6["weights"]["measured_host"] == edge6["weights"]["estimated_host"] > 0
    assert edge6["weights"]["measured"] + edge6["weights"]["measured_host"] == edge8["weights"]["measured"]
    assert edge6["peak_window_estimated"] > 0 and edge6["peak_window_bytes"] is None  # no CUDA here

    table = (out / "results.md").read_text()
    for name in PLANS:
        assert f"| {name} |" in table
    assert "failed: PlanLoadError" in table
    assert f"{by_name['edge-8gb']['weights']['estimated'] / 1e6:.3f}" in table  # the measured numbers
    for name in ("hqq4", "ao-int8dq"):  # the other methods: compared like the rest
        p = by_name[name]
        assert p["status"] == "ok", p.get("error")
        assert p["weights"]["estimated"] == p["weights"]["measured"] < ref["weights"]["measured"]
        assert p["quantize_s"] > 0 and p["kl_mean"] > 0
    assert by_name["fp16"]["quantize_s"] is not None  # 0-ish: nothing converted
    scatter = (out / "scatter.png").read_bytes()
    assert scatter[:8] == b"\x89PNG\r\n\x1a\n" and len(scatter) > 5000
    assert "| quantize (s) |" in table
    png = (out / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert results["plans"][0]["windows"][0]["text"] == on_disk["plans"][0]["windows"][0]["text"]


def test_cli_errors_are_one_line(setup, capsys):
    args = ["--model", str(setup / "tiny"), "--source", str(setup / "clip.mp4"), "--out", str(setup / "x")]
    assert main(args + ["--plans", "fp16,nf5"]) == EXIT_USAGE  # bad input, found before any work
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown plan 'nf5'") and "edge-8gb" in err[0]
    assert main(args[:4] + ["--source", str(setup / "missing.mp4"), "--out", str(setup / "x")]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.mp4" in err[0]
