"""Every model/ and quant/ command line, run as a real subprocess, on each class of error:
one ``error:`` line on stderr naming the file or option, no traceback, the exit code of
`live.contract.cli` (2: bad input found before work), and nothing slow loaded first."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from live.contract.cli import EXIT_USAGE
from tests.media import make_clip
from tests.parallel import two_at_a_time
from tests.test_train_data import make_synthetic_set

REPO = Path(__file__).resolve().parents[1]
LOADED = "Loading weights"  # transformers' progress line: the model was being loaded
CLI_TIMEOUT_S = 300


def run(module: str, *args) -> subprocess.CompletedProcess:
    """`python -m module args` with no GPU visible (so `--device cuda` must be refused)."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))
    env.pop("OMNI_TRACEBACK", None)
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S)


def run_all(calls: dict) -> dict[str, subprocess.CompletedProcess]:
    """`run(*args)` for each of ``calls`` (name → args), two at a time."""
    return two_at_a_time(run, calls)


def one_error(proc: subprocess.CompletedProcess, *names: str, code: int = EXIT_USAGE) -> str:
    """Assert the one-line convention and return the line."""
    shown = f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == code, shown
    assert len(lines) == 1, shown
    assert "Traceback" not in proc.stderr, shown
    for name in names:
        assert name in lines[0], shown
    return lines[0]


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("cli-errors")
    truncated = shutil.copytree(tiny_checkpoint, root / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size * 9 // 10])
    garbage = shutil.copytree(tiny_checkpoint, root / "garbage")
    (garbage / "config.json").write_text("garbage{")
    make_clip(root / "clip.mp4", seconds=2.0)
    data = bytearray((root / "clip.mp4").read_bytes())  # damaged in the middle, header intact
    for i in range(len(data) // 3, len(data) * 2 // 3, 50):
        data[i] ^= 0x5A
    (root / "damaged.mp4").write_bytes(bytes(data))
    manifest, cache = make_synthetic_set(root / "data")
    (root / "a-file").write_text("not a folder")
    return dict(root=root, tiny=tiny_checkpoint, truncated=truncated, garbage=garbage, clip=root / "clip.mp4",
                damaged=root / "damaged.mp4", manifest=manifest, cache=cache, file=root / "a-file")


# ---------------------------------------------------------------- damaged checkpoints
@pytest.mark.parametrize("which,file", [("truncated", "model.safetensors"), ("garbage", "config.json")])
def test_damaged_checkpoint_is_named_by_every_loading_cli(assets, tmp_path, which, file):
    ckpt = assets[which]
    named = str(ckpt / file)
    procs = run_all({
        "infer": ("model.serve.infer", "--model", ckpt, "--video", assets["clip"]),
        "predict": ("model.evaluate", "predict", "--model", ckpt, "--data", assets["manifest"],
                    "--out", tmp_path / "pred.jsonl"),
        "train": ("model.train", "--phase", "1", "--model", ckpt, "--data", assets["manifest"],
                  "--out", tmp_path / "train"),
        "experiments": ("quant.experiments", "--model", ckpt, "--source", assets["clip"],
                        "--out", tmp_path / "qx"),
    })
    for name, proc in procs.items():
        line = one_error(proc, named, "damaged")
        assert LOADED not in proc.stderr, name
        assert "rebuild or re-download" in line, name
    assert not (tmp_path / "pred.jsonl").exists() and not (tmp_path / "train").exists()
    assert not (tmp_path / "qx").exists()


def test_quant_plan_names_a_garbage_config(assets):
    one_error(run("quant.footprint", "--model", assets["garbage"], "--plan", "nf4"), str(assets["garbage"] / "config.json"))


# ---------------------------------------------------------------- --device cuda, no CUDA
def test_device_cuda_without_cuda_is_a_usage_error(assets, tmp_path):
    procs = run_all({
        "infer": ("model.serve.infer", "--model", assets["tiny"], "--video", assets["clip"], "--device", "cuda"),
        "predict": ("model.evaluate", "predict", "--model", assets["tiny"], "--data", assets["manifest"],
                    "--out", tmp_path / "pred.jsonl", "--device", "cuda"),
        "experiments": ("quant.experiments", "--model", assets["tiny"], "--source", assets["clip"],
                        "--out", tmp_path / "qx", "--device", "cuda:0", "--plans", "nf4"),
    })
    for proc in procs.values():
        line = one_error(proc, "--device", "CUDA is not available")
        assert LOADED not in proc.stderr, line


# ---------------------------------------------------------------- outputs
def test_out_that_is_a_file_or_under_a_file_is_refused_before_loading(assets):
    a_file = assets["file"]
    procs = run_all({
        "build": ("model.checkpoint.build", "--preset", "tiny", "--out", a_file),
        "train": ("model.train", "--phase", "1", "--model", assets["tiny"], "--data", assets["manifest"],
                  "--cache", assets["cache"], "--out", a_file / "run"),
        "predict": ("model.evaluate", "predict", "--model", assets["tiny"], "--data", assets["manifest"],
                    "--out", a_file / "pred.jsonl"),
        "experiments": ("quant.experiments", "--model", assets["tiny"], "--source", assets["clip"], "--out", a_file),
        "builders": ("model.data.builders", "csv", assets["file"], assets["root"], "--out", assets["root"]),
    })
    whys = {"build": "is a file", "train": "cannot be created", "predict": "cannot be created",
            "experiments": "is a file", "builders": "is a folder"}
    for name, proc in procs.items():
        line = one_error(proc, "--out", whys[name])
        assert LOADED not in proc.stderr, f"{name}: {line}"
    assert a_file.read_text() == "not a folder"


def test_existing_out_is_refused_unless_overwrite(assets, tmp_path):
    out = tmp_path / "ckpt"
    assert run("model.checkpoint.build", "--preset", "tiny", "--out", out).returncode == 0
    before = (out / "model.safetensors").read_bytes()
    one_error(run("model.checkpoint.build", "--preset", "tiny", "--out", out, "--seed", "1"),
              "--out", str(out), "--overwrite")
    assert (out / "model.safetensors").read_bytes() == before  # untouched
    assert run("model.checkpoint.build", "--preset", "tiny", "--out", out, "--seed", "1",
               "--overwrite").returncode == 0
    assert (out / "model.safetensors").read_bytes() != before

    pred = tmp_path / "pred.jsonl"
    pred.write_text("keep me\n")
    one_error(run("model.evaluate", "predict", "--model", assets["tiny"], "--data", assets["manifest"],
                  "--out", pred), "--out", "--overwrite")
    assert pred.read_text() == "keep me\n"

    train_out = tmp_path / "train"
    train_out.mkdir()
    (train_out / "log.csv").write_text("step\n")
    line = one_error(run("model.train", "--phase", "1", "--model", assets["tiny"], "--data", assets["manifest"],
                         "--cache", assets["cache"], "--out", train_out), "--out", "--overwrite", "--resume")
    assert (train_out / "log.csv").read_text() == "step\n", line


# ---------------------------------------------------------------- media damaged mid-file
def test_decode_error_mid_file_names_the_file(assets):
    proc = run("model.serve.infer", "--model", assets["tiny"], "--video", assets["damaged"], "--no-faces")
    one_error(proc, str(assets["damaged"]))
    assert LOADED not in proc.stderr  # found while decoding, before the model loads
