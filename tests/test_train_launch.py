"""`accelerate launch` with 2 CPU processes (DDP over gloo), and the shipped configs.

On a machine without GPUs, `accelerate launch --cpu` runs a single process (it needs
mpirun for more), so the test uses the multi-process launcher with
ACCELERATE_USE_CPU=1, which makes each process a CPU worker of one gloo group.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from model.train.log import read_log
from tests.test_train_data import make_synthetic_set

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "accelerate"
LAUNCH_TIMEOUT_S = 120


def free_port() -> int:
    """A port no one listens on now (the OS picks it: bind port 0), so runs beside
    each other never share a rendezvous port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def whole(proc: subprocess.CompletedProcess) -> str:
    """Everything a launch printed, for the failure message (a rank's crash cause can be
    anywhere in it)."""
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def test_two_process_cpu_run_through_accelerate_launch(tmp_path):
    from model.checkpoint.loading import build_tiny

    build_tiny(tmp_path / "tiny")
    manifest, cache = make_synthetic_set(tmp_path / "data")
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1", PYTHONPATH=str(ROOT))
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        "-m", "model.train", "--phase", "3", "--model", str(tmp_path / "tiny"), "--data", str(manifest),
        "--cache", str(cache), "--out", str(out), "--max-steps", "2", "--batch", "1", "--grad-accum", "1",
        "--lr", "1e-3", "--save-every", "1", "--no-progress",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    assert proc.returncode == 0, whole(proc)
    assert "2 process(es)" in proc.stdout and "effective batch 2" in proc.stdout
    assert proc.stdout.count("trained 2 steps") == 1  # printed by the main process only
    rows = read_log(out / "log.csv")
    assert [r.step for r in rows] == [1, 2]
    state = out / "checkpoint-1" / "accelerate"
    assert (state / "random_states_0.pkl").is_file() and (state / "random_states_1.pkl").is_file()
    assert (out / "final" / "model.safetensors").is_file()


def test_launch_with_more_processes_than_gpus_is_refused_in_one_line(tmp_path):
    """A GPU config (no --cpu) on a machine with fewer GPUs than processes: the trainer
    refuses before loading anything, the main process says so once, nothing is written."""
    from model.checkpoint.loading import build_tiny

    build_tiny(tmp_path / "tiny")
    manifest, cache = make_synthetic_set(tmp_path / "data")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")  # 0 GPUs visible
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        "-m", "model.train", "--phase", "3", "--model", str(tmp_path / "tiny"), "--data", str(manifest),
        "--cache", str(cache), "--out", str(out), "--max-steps", "1", "--no-progress",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
    assert proc.returncode != 0, whole(proc)
    ours = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(ours) == 1, whole(proc)  # the main process only
    assert "2 processes" in ours[0] and "no GPU is visible" in ours[0], whole(proc)
    # refused at the top of the entry, before torch loads: the line comes first, and the
    # failure torch elastic reports is rank 0's exit 2
    assert proc.stderr.splitlines()[0] == ours[0], whole(proc)
    assert "exitcode  : 2" in proc.stderr, whole(proc)
    assert not out.exists()


def test_light_gpu_count_without_torch(tmp_path):
    from model.train.launch_check import light_gpu_count

    proc, dev = tmp_path / "gpus", tmp_path / "dev"
    dev.mkdir()
    assert light_gpu_count({}, proc, dev) == 0  # no driver: no GPU
    for i in range(4):
        (proc / f"0000:0{i}:00.0").mkdir(parents=True)
    assert light_gpu_count({}, proc, dev) == 4
    assert light_gpu_count({"CUDA_VISIBLE_DEVICES": ""}, proc, dev) == 0
    assert light_gpu_count({"CUDA_VISIBLE_DEVICES": "1,3"}, proc, dev) == 2
    assert light_gpu_count({"CUDA_VISIBLE_DEVICES": "0,7,1"}, proc, dev) == 1  # CUDA stops at the first invalid id
    assert light_gpu_count({"CUDA_VISIBLE_DEVICES": "-1"}, proc, dev) == 0
    (dev / "kfd").touch()
    assert light_gpu_count({}, proc, dev) is None  # ROCm: torch decides


def test_precheck_main_rank_reports_others_leave_quietly(capsys):
    from model.train.launch_check import precheck

    env = {"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "8", "CUDA_VISIBLE_DEVICES": ""}
    with pytest.raises(SystemExit) as e:
        precheck({**env, "RANK": "0"})
    assert e.value.code == 2 and capsys.readouterr().err.startswith("error: accelerate launched 8 processes")
    with pytest.raises(SystemExit) as e:
        precheck({**env, "RANK": "3"})
    assert e.value.code == 0 and capsys.readouterr().err == ""
    precheck({"WORLD_SIZE": "1"})  # a plain run: nothing to check
    precheck({**env, "ACCELERATE_USE_CPU": "true"})  # CPU workers asked for


def test_check_processes_rule():
    from live.contract.cli import CliError
    from model.train.cli import check_processes

    check_processes({}, 0)  # one plain process
    check_processes({"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "ACCELERATE_USE_CPU": "true"}, 0)
    check_processes({"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "8"}, 8)
    check_processes({"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}, 8)  # two machines of 8
    with pytest.raises(CliError, match="8 processes on this machine but only 2 GPU"):
        check_processes({"WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "8"}, 2)
    with pytest.raises(CliError, match="no GPU is visible"):
        check_processes({"WORLD_SIZE": "8"}, 0)


@pytest.mark.parametrize("name,kind,processes",
                         [("single_gpu", "NO", 1), ("ddp-8gpu", "MULTI_GPU", 8), ("fsdp-8gpu", "FSDP", 8)])
def test_shipped_accelerate_configs_load(name, kind, processes):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert config.distributed_type.value == kind
    assert config.num_processes == processes
    named = re.search(r"-(\d+)gpu$", name)  # a multi-GPU config says in its name what it needs
    assert int(named.group(1)) == processes if named else processes == 1
    assert config.mixed_precision == "bf16"
    if name.startswith("fsdp"):
        assert config.fsdp_config["fsdp_version"] == 2
        from model.net.modeling import OmniEmotionPreTrainedModel

        wrapped = set(config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(","))
        assert wrapped <= set(OmniEmotionPreTrainedModel._no_split_modules)
