"""`bench/gpu.py` keeps working: the tiny preset on the CPU through the same code a GPU
machine runs (random checkpoint, quant loader, live loop, JSON + Markdown table); and
the page says when a checkpoint's weights are random."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]


def test_gpu_bench_runs_on_cpu_with_the_tiny_model(tmp_path):
    out = subprocess.run([sys.executable, "bench/gpu.py", "--presets", "tiny", "--plans", "fp16", "--device", "cpu",
                          "--seconds", "5", "--answer-tokens", "12", "--out-dir", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "results.json").read_text())
    assert json.loads(out.stdout) == result
    assert result["card"].startswith("CPU") and result["windows"] >= 2
    (run,) = result["runs"]
    assert run["preset"] == "tiny" and run["plan"] == "fp16" and "error" not in run
    assert 0 < run["to_label_s"]["p50"] <= run["to_explanation_s"]["p50"]
    assert run["tokens_per_s"] > 0 and run["peak_gb"]["measured"] > 0 and run["peak_gb"]["estimated"] > 0
    table = (tmp_path / "results.md").read_text()
    assert "| tiny | fp16 |" in table and "Card: **CPU" in table


def test_page_banner_says_random_weights():
    from live.page.render import model_banner

    holder = SimpleNamespace(state="ready", status=lambda: "m",
                             analyser=SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(random_weights=True))))
    assert "random weights" in model_banner(holder)
    holder.analyser.model.config.random_weights = False
    assert "random" not in model_banner(holder)
    assert "random" not in model_banner(SimpleNamespace(state="loading", status=lambda: "loading…"))
