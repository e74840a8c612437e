"""The launch rule of `model.train`, light enough to run before anything heavy is imported.

`accelerate launch` starts the entry (`python -m model.train`) once per process; it never
runs project code in the launcher itself, so the earliest a refusal can come is at the
top of each worker. `precheck` runs there (`model/train/__main__.py`) in milliseconds:
it counts the visible GPUs without importing torch and, when the launch has more
processes on this machine than GPUs, the main process (rank 0) prints the project's one
line and exits 2 while the other ranks leave quietly (exit 0, so torch elastic reports
one failure, rank 0's, not eight), before any model, data or CUDA is touched. The full
check (`model.train.cli.check_processes`, with torch's own GPU count) runs again later.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

ACCEL_CONFIGS = "configs/accelerate"  # ddp-8gpu.yaml, fsdp-8gpu.yaml, single_gpu.yaml
NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")  # one folder per NVIDIA GPU the driver sees
EXIT_USAGE = 2  # live.contract.cli.EXIT_USAGE (not imported: live.contract.cli is light, but keep this module bare)


def process_error(env: dict[str, str], cuda_devices: int) -> str | None:
    """The one launch rule: more processes on this machine than visible GPUs is refused
    (they would share devices, or race as CPU processes nobody asked for). `env`: the
    launcher's environment (WORLD_SIZE, LOCAL_WORLD_SIZE, ACCELERATE_USE_CPU). Returns
    the message, or None when the launch fits."""
    world = int(env.get("WORLD_SIZE", "1"))
    local = int(env.get("LOCAL_WORLD_SIZE", world))
    on_cpu = env.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    if world <= 1 or on_cpu or local <= cuda_devices:
        return None
    if cuda_devices == 0:
        return (f"accelerate launched {local} processes but no GPU is visible; run without "
                "accelerate launch (one CPU process), or pass --cpu to accelerate launch")
    return (f"accelerate launched {local} processes on this machine but only {cuda_devices} GPU(s) are "
            f"visible; pass --num_processes {cuda_devices} to accelerate launch or use a config of "
            f"{ACCEL_CONFIGS} whose name fits the machine")


def light_gpu_count(env: dict[str, str], proc: Path = NVIDIA_PROC, dev: Path = Path("/dev")) -> int | None:
    """NVIDIA GPUs this process may use, without importing torch: the driver's GPUs
    (``/proc/driver/nvidia/gpus``, else ``/dev/nvidiaN``) limited by
    ``CUDA_VISIBLE_DEVICES`` (CUDA's rule: the list up to its first invalid entry).
    None when this cannot be told (an AMD ROCm machine: let torch decide)."""
    if (dev / "kfd").exists():
        return None
    if proc.is_dir():
        present = len([p for p in proc.iterdir() if p.is_dir()])
    else:
        present = len([p for p in dev.glob("nvidia*") if re.fullmatch(r"nvidia\d+", p.name)])
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return present
    ids = []
    for item in visible.split(","):
        item = item.strip()
        if not item or not (item.isdigit() or item.startswith(("GPU-", "MIG-"))):
            break
        if item.isdigit() and int(item) >= present:
            break
        ids.append(item)
    return min(len(ids), present)


def precheck(env: dict[str, str] | None = None) -> None:
    """Exit now when the launch cannot fit this machine (see the module docstring);
    return otherwise."""
    env = dict(os.environ) if env is None else env
    if int(env.get("WORLD_SIZE", "1")) <= 1:
        return
    gpus = light_gpu_count(env)
    message = None if gpus is None else process_error(env, gpus)
    if message is None:
        return
    if int(env.get("RANK", "0")) == 0:
        print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USAGE)
    raise SystemExit(0)  # the main process reports it; one failure in elastic's summary
