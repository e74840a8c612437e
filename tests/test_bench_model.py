"""bench/model.py: decode speed is measured inside one generate, so the README's
`--repeats 1` prints a number, never null."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_model", ROOT / "bench" / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_decode_rate_counts_steps_after_the_first():
    bench = _bench()

    def run(clock):  # three steps, as a generate of 3 tokens would make
        for _ in range(3):
            clock[0](None, "scores")

    rate = bench.decode_rate(run)
    assert rate > 0 and math.isfinite(rate)


def test_one_repeat_gives_a_decode_speed():
    speed = _bench().tiny_speed(window_s=1.0, repeats=1)
    assert isinstance(speed["decode_tokens_per_s"], float) and speed["decode_tokens_per_s"] > 0
    assert "median of 1" in speed["decode_measured"]
