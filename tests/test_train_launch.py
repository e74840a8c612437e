"""`accelerate launch` with 2 CPU processes (DDP over gloo), and the shipped configs.

On a machine without GPUs, `accelerate launch --cpu` runs a single process (it needs
mpirun for more), so the test uses the multi-process launcher with
ACCELERATE_USE_CPU=1, which makes each process a CPU worker of one gloo group.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from model.train.log import read_log
from tests.test_train_data import make_synthetic_set

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "accelerate"
LAUNCH_TIMEOUT_S = 120


def test_two_process_cpu_run_through_accelerate_launch(tmp_path):
    from model.checkpoint.loading import build_tiny

    build_tiny(tmp_path / "tiny")
    manifest, cache = make_synthetic_set(tmp_path / "data")
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1", PYTHONPATH=str(ROOT))
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
        "-m", "model.train", "--phase", "3", "--model", str(tmp_path / "tiny"), "--data", str(manifest),
        "--cache", str(cache), "--out", str(out), "--max-steps", "2", "--batch", "1", "--grad-accum", "1",
        "--lr", "1e-3", "--save-every", "1", "--no-progress",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout and "effective batch 2" in proc.stdout
    assert proc.stdout.count("trained 2 steps") == 1  # printed by the main process only
    rows = read_log(out / "log.csv")
    assert [r.step for r in rows] == [1, 2]
    state = out / "checkpoint-1" / "accelerate"
    assert (state / "random_states_0.pkl").is_file() and (state / "random_states_1.pkl").is_file()
    assert (out / "final" / "model.safetensors").is_file()


@pytest.mark.parametrize("name,kind,processes", [("single_gpu", "NO", 1), ("ddp", "MULTI_GPU", 8), ("fsdp", "FSDP", 8)])
def test_shipped_accelerate_configs_load(name, kind, processes):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert config.distributed_type.value == kind
    assert config.num_processes == processes
    assert config.mixed_precision == "bf16"
    if name == "fsdp":
        assert config.fsdp_config["fsdp_version"] == 2
        from model.net.modeling import OmniEmotionPreTrainedModel

        wrapped = set(config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(","))
        assert wrapped <= set(OmniEmotionPreTrainedModel._no_split_modules)
