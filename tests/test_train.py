"""Training: exact phase freezing, overfitting, bit-exact resume, LoRA, CLI errors.

Every run is the tiny random model on `make_synthetic_set` (4 cached samples), in
process; `tests/test_train_launch.py` covers `accelerate launch` with 2 processes.
"""
from __future__ import annotations

import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from model.net.modeling import PHASE_TRAINABLE
from live.contract.cli import EXIT_USAGE, CliError
from model.train.cli import TrainSettings, build_parser, main, train
from model.train.log import COLUMNS, read_log
from model.train.trainer import derive_grad_accum, latest_checkpoint
from tests.test_train_data import make_synthetic_set

RESUME_TOL = 1e-5  # loss difference allowed between a resumed and an uninterrupted run


def reset_accelerate():
    """Each in-process run builds its own Accelerator; accelerate keeps process-wide
    singletons, so reset them between runs as a fresh process would have them."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    reset_accelerate()
    yield
    reset_accelerate()


@pytest.fixture(scope="module")
def tiny_dir(tiny_checkpoint):
    return tiny_checkpoint


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_set(tmp_path_factory.mktemp("data"))


def _weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _changed(before: dict, after: dict) -> set[str]:
    assert before.keys() == after.keys()
    return {k for k in before if not torch.equal(before[k], after[k])}


def _in_phase(name: str, phase: int) -> bool:
    return any(name == p or name.startswith(p + ".") for p in PHASE_TRAINABLE[phase])


@pytest.mark.parametrize("phase", [1, 2, 3])
def test_phase_freezing_is_exact(tmp_path, tiny_dir, data, phase):
    manifest, cache = data
    out = tmp_path / "out"
    result = train(
        phase, str(tiny_dir), str(manifest), str(out), cache=str(cache),
        max_steps=1, lr=1e-2, batch=2, grad_accum=1, warmup_ratio=0.0, save_every=0, progress=False,
    )
    changed = _changed(_weights(tiny_dir), _weights(result.final))
    want = {k for k in _weights(tiny_dir) if _in_phase(k, phase)}
    assert want, "the phase trains something"
    assert changed == want, (sorted(changed - want)[:5], sorted(want - changed)[:5])


def test_tiny_model_overfits_four_samples(tmp_path, tiny_dir, data):
    manifest, cache = data
    out = tmp_path / "out"
    result = train(
        3, str(tiny_dir), str(manifest), str(out), cache=str(cache),
        max_steps=30, lr=1e-2, batch=4, grad_accum=1, warmup_ratio=0.1, save_every=0, progress=False,
        gradient_checkpointing=False,
    )
    first, last = result.losses[0], result.losses[-1]
    assert last <= 0.2 * first, f"loss {first:.3f} → {last:.3f} ({1 - last / first:.0%} drop)"
    rows = read_log(out / "log.csv")
    assert [r.step for r in rows] == list(range(1, 31))
    assert (out / "log.csv").read_text().splitlines()[0] == ",".join(COLUMNS)
    assert (out / "loss.png").stat().st_size > 1000
    assert (out / "final" / "config.json").is_file()


def test_resume_continues_the_same_loss_trajectory(tmp_path, tiny_dir, data):
    """Uninterrupted 6 steps vs. the same run restarted from its step-2 checkpoint.

    batch 1 × grad_accum 3 over 4 samples: an epoch is 3 + 1 micro-batches (the last
    step of each epoch is a partial accumulation), so the checkpoint sits mid-epoch
    and the resume must skip the right batches of the right shuffled order.
    """
    manifest, cache = data
    out = tmp_path / "out"
    kwargs = dict(cache=str(cache), max_steps=6, lr=3e-3, batch=1, grad_accum=3, save_every=2, progress=False)
    full = train(3, str(tiny_dir), str(manifest), str(out), **kwargs)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    uninterrupted = [r.loss for r in read_log(out / "log.csv")]
    assert uninterrupted == pytest.approx(full.losses, abs=1e-6)

    # "Kill" the run after its step-2 checkpoint: later state is gone, the log is not.
    for name in ("checkpoint-4", "checkpoint-6", "final"):
        shutil.rmtree(out / name)
    assert latest_checkpoint(out).name == "checkpoint-2"

    reset_accelerate()
    resumed = train(3, str(tiny_dir), str(manifest), str(out), resume=True, **kwargs)
    assert resumed.steps == 6 and len(resumed.losses) == 4
    assert resumed.losses == pytest.approx(uninterrupted[2:], abs=RESUME_TOL)
    rows = read_log(out / "log.csv")
    assert [r.step for r in rows] == [1, 2, 3, 4, 5, 6]  # rows after step 2 replaced, not duplicated
    assert [r.loss for r in rows] == pytest.approx(uninterrupted, abs=RESUME_TOL)
    torch.testing.assert_close(_weights(out / "final"), _weights(out / "checkpoint-6"))


def test_resume_refuses_a_different_plan(tmp_path, tiny_dir, data):
    manifest, cache = data
    out = tmp_path / "out"
    train(2, str(tiny_dir), str(manifest), str(out), cache=str(cache), max_steps=1, batch=2, grad_accum=1, progress=False)
    reset_accelerate()
    with pytest.raises(ValueError, match="plan changed"):
        train(2, str(tiny_dir), str(manifest), str(out), cache=str(cache), max_steps=1, batch=1, grad_accum=1,
              resume=True, progress=False)


def test_lora_phase3_trains_adapters_and_merges(tmp_path, tiny_dir, data):
    manifest, cache = data
    out = tmp_path / "out"
    result = train(
        3, str(tiny_dir), str(manifest), str(out), cache=str(cache), lora=True, lora_r=4,
        max_steps=2, lr=1e-2, batch=2, grad_accum=1, warmup_ratio=0.0, save_every=0, progress=False,
    )
    adapter = out / "final-adapter"
    assert (adapter / "adapter" / "adapter_config.json").is_file()
    extra = load_file(str(adapter / "trainable.safetensors"))
    assert extra and all(not k.startswith(("model.language_model", "lm_head")) for k in extra)
    before, after = _weights(tiny_dir), _weights(result.final)
    changed = _changed(before, after)
    # Merged LoRA changes exactly the adapted projections; the projectors train in full.
    lora_targets = {k for k in before if k.startswith("model.language_model.") and k.endswith("proj.weight")}
    assert lora_targets and lora_targets <= changed
    assert not {k for k in changed if k.startswith(("model.vision_tower", "model.audio_encoder", "model.face_encoder"))}
    assert "lm_head.weight" not in changed and "model.language_model.embed_tokens.weight" not in changed
    assert {k for k in changed if "projector" in k} == {k for k in extra if "projector" in k}

    from model.checkpoint.loading import load

    model, _ = load(result.final)
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_lora_is_refused_for_a_phase_that_freezes_the_llm(tmp_path, tiny_dir, data):
    manifest, cache = data
    with pytest.raises(ValueError, match="phase 1 does not train the LLM"):
        train(1, str(tiny_dir), str(manifest), str(tmp_path / "o"), cache=str(cache), lora=True, max_steps=1, progress=False)


def test_grad_accum_reaches_the_paper_batch():
    assert derive_grad_accum(256, 4, 1) == 64
    assert derive_grad_accum(128, 2, 8) == 8
    assert derive_grad_accum(128, 3, 1) == 43  # rounded up: 129 ≥ 128
    assert derive_grad_accum(128, 256, 1) == 1
    with pytest.raises(ValueError):
        derive_grad_accum(128, 0, 1)


def test_cli_errors_are_one_line(tmp_path, tiny_dir, capsys):
    code = main(["--phase", "2", "--model", str(tiny_dir), "--data", str(tmp_path / "missing.jsonl"),
                 "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE  # found before anything loads
    assert len(err) == 1 and err[0].startswith("error:") and "missing.jsonl" in err[0]


def test_cli_qlora_without_quant_fails_cleanly(tmp_path, tiny_dir, data, capsys, monkeypatch):
    import model.train.cli as train_mod

    def no_quant():
        raise CliError("--qlora needs quant.load_model, which is not available (test)")

    monkeypatch.setattr(train_mod, "quant_loader", no_quant)
    manifest, cache = data
    code = main(["--phase", "3", "--model", str(tiny_dir), "--data", str(manifest), "--cache", str(cache),
                 "--out", str(tmp_path / "o"), "--qlora"])
    assert code == EXIT_USAGE
    assert "quant.load_model" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before OUT is made


def test_qlora_path_uses_the_given_loader_and_merges_into_the_full_base(tmp_path, tiny_dir, data):
    """The 4-bit loader comes from quant/ at the CLI; here a stand-in records the call
    (full precision, so this checks the plumbing, not 4-bit numerics)."""
    from model.checkpoint.loading import load

    calls = []

    def loader(model_dir, plan, device):  # model.checkpoint.loading.Loader
        calls.append((model_dir, plan, str(device)))
        return load(model_dir)

    manifest, cache = data
    out = tmp_path / "out"
    result = train(
        3, str(tiny_dir), str(manifest), str(out), cache=str(cache), qlora=True, lora_r=4, loader=loader,
        max_steps=1, lr=1e-2, batch=2, grad_accum=1, warmup_ratio=0.0, save_every=0, progress=False,
    )
    assert calls == [(str(tiny_dir), "nf4", "cpu")]  # the default --qlora-plan
    assert (out / "final-adapter" / "adapter" / "adapter_config.json").is_file()
    changed = _changed(_weights(tiny_dir), _weights(result.final))
    assert any(k.startswith("model.language_model.") for k in changed)
    assert not any(k.startswith("model.vision_tower") for k in changed)


def test_qlora_with_the_real_nf4_plan(tmp_path, tiny_dir, data):
    """QLoRA through quant's nf4 plan (bitsandbytes Linear4bit on the CPU): it trains
    the adapters, keeps the 4-bit base frozen, and merges into the full-precision base."""
    from quant import load_model

    manifest, cache = data
    out = tmp_path / "out"
    result = train(
        3, str(tiny_dir), str(manifest), str(out), cache=str(cache), qlora=True, lora_r=4,
        loader=load_model, qlora_plan="nf4", max_steps=2, lr=1e-2, batch=2, grad_accum=1, warmup_ratio=0.0,
        save_every=0, progress=False,
    )
    assert len(result.losses) == 2 and all(math.isfinite(l) for l in result.losses)  # no NaN, no inf
    changed = _changed(_weights(tiny_dir), _weights(result.final))
    assert any(k.startswith("model.language_model.layers") for k in changed)
    assert not any(k.startswith(("model.vision_tower", "model.audio_encoder")) for k in changed)


def test_cli_flags_are_generated_from_the_one_declaration():
    """Every TrainSettings field is a flag with its help; parsed defaults are the fields'."""
    from dataclasses import fields

    ap = build_parser()
    by_dest = {a.dest: a for a in ap._actions if a.dest != "help"}
    assert set(by_dest) == {f.name for f in fields(TrainSettings)}
    assert all(a.help for a in by_dest.values())
    args = ap.parse_args(["--phase", "2", "--model", "m", "--data", "d.jsonl", "--out", "o"])
    assert TrainSettings(**vars(args)) == TrainSettings(2, "m", "d.jsonl", "o")
    args = ap.parse_args(["--phase", "3", "--model", "m", "--data", "d", "--out", "o", "--lr", "2e-5",
                          "--no-merge", "--no-gradient-checkpointing", "--resume", "--qlora", "--lora-r", "8"])
    s = TrainSettings(**vars(args))
    assert (s.lr, s.merge, s.gradient_checkpointing, s.resume, s.qlora, s.lora_r) == (2e-5, False, False, "latest", True, 8)
    assert s.lora_settings.r == 8 and TrainSettings(1, "m", "d", "o", qlora=True).lora_settings is None
    with pytest.raises(SystemExit):  # --lora and --qlora are exclusive
        ap.parse_args(["--phase", "3", "--model", "m", "--data", "d", "--out", "o", "--lora", "--qlora"])
