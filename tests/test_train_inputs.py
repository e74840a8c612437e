"""Training inputs are checked before any work (exit 2, nothing left in --out, so the
corrected rerun is not refused) and one process at a time writes an --out (its lock
names the owner; a dead owner's lock is taken over).
"""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from live.contract.cli import EXIT_USAGE
from model.train.cli import main
from model.train.log import COLUMNS, CsvLog, LogRow, read_log
from tests.locks import hold_lock
from tests.test_train import reset_accelerate
from tests.test_train_data import make_synthetic_set

HOLD_TIMEOUT_S = 60  # for the killed lock holder to be reaped


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    reset_accelerate()
    yield
    reset_accelerate()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_set(tmp_path_factory.mktemp("data"))


def _args(tiny, manifest, cache, out, *extra) -> list[str]:
    base = ["--phase", "3", "--model", str(tiny), "--data", str(manifest), "--out", str(out),
            "--max-steps", "1", "--batch", "2", "--grad-accum", "1", "--save-every", "0", "--no-progress"]
    return base + (["--cache", str(cache)] if cache is not None else []) + list(extra)


def _must_not_load(monkeypatch):
    import model.train.trainer as trainer

    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(trainer, "_trainable_model", refuse)


def _rewrite_manifest(manifest: Path, dest: Path, change) -> Path:
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    change(rows)
    dest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dest


@pytest.mark.parametrize("case", ["malformed", "label-list", "nan-lr", "max-steps-0", "negative-batch",
                                  "warmup-5", "missing-video"])
def test_bad_inputs_exit_2_before_loading_and_leave_out_empty(case, tmp_path, tiny_checkpoint, data,
                                                              capsys, monkeypatch):
    manifest, cache = data
    out = tmp_path / "out"
    extra: list[str] = []
    if case == "malformed":
        manifest = tmp_path / "bad.jsonl"
        manifest.write_text('{"id": "a", "video": "v.mp4", \n')
    elif case == "label-list":
        manifest = _rewrite_manifest(manifest, tmp_path / "m.jsonl",
                                     lambda rows: rows[1].update(label=["happy", "sad"]))
    elif case == "missing-video":
        cache = None  # decode on the fly: the synthetic set's videos do not exist
    else:
        extra = {"nan-lr": ["--lr", "nan"], "max-steps-0": ["--max-steps", "0"],
                 "negative-batch": ["--batch", "-2"], "warmup-5": ["--warmup-ratio", "5"]}[case]
    _must_not_load(monkeypatch)
    code = main(_args(tiny_checkpoint, manifest, cache, out, *extra))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE, err
    assert len(err) == 1 and err[0].startswith("error:"), err
    want = {"malformed": "bad.jsonl:1", "label-list": "'label'", "nan-lr": "--lr", "max-steps-0": "--max-steps",
            "negative-batch": "--batch", "warmup-5": "--warmup-ratio", "missing-video": "0.mp4"}[case]
    assert want in err[0]
    assert not out.exists()  # no errors.log: the corrected rerun is not refused


def test_corrected_rerun_after_a_refused_one_trains(tmp_path, tiny_checkpoint, data, capsys):
    manifest, cache = data
    out = tmp_path / "out"
    assert main(_args(tiny_checkpoint, manifest, cache, out, "--lr", "nan")) == EXIT_USAGE
    capsys.readouterr()
    assert main(_args(tiny_checkpoint, manifest, cache, out, "--lr", "1e-3")) == 0, capsys.readouterr().err
    assert (out / "final").is_dir() and not (out / ".lock").exists()  # released at the end


def test_a_second_run_on_a_running_out_is_refused_and_a_dead_owners_lock_is_taken_over(
        tmp_path, tiny_checkpoint, data, capsys):
    manifest, cache = data
    out = tmp_path / "out"
    run = ("--lr", "1e-3", "--max-steps", "2", "--save-every", "1")
    assert main(_args(tiny_checkpoint, manifest, cache, out, *run)) == 0
    capsys.readouterr()
    log_before = (out / "log.csv").read_bytes()
    holder = hold_lock(out)
    try:
        code = main(_args(tiny_checkpoint, manifest, cache, out, *run, "--resume"))
        err = capsys.readouterr().err.strip().splitlines()
        assert code == EXIT_USAGE
        assert len(err) == 1 and f"pid {holder.pid}" in err[0] and "another process" in err[0], err
        assert (out / "log.csv").read_bytes() == log_before  # the running one's log is untouched
        assert not (out / "errors.log").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(HOLD_TIMEOUT_S)
    reset_accelerate()
    code = main(_args(tiny_checkpoint, manifest, cache, out, *run, "--resume"))
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"took over the lock of {out}" in err and f"pid {holder.pid}" in err
    assert [r.step for r in read_log(out / "log.csv")] == [1, 2]


def test_csv_log_cuts_a_torn_row_and_keeps_it_aside(tmp_path):
    path = tmp_path / "log.csv"
    log = CsvLog(path)
    log.append(LogRow(1, 0.5, 1e-3, 1.0, 0.1, 0))
    log.append(LogRow(2, 0.4, 1e-3, 1.0, 0.2, 0))
    log.close()
    with open(path, "a") as f:
        f.write("3,0.3")  # a kill mid-write
    log = CsvLog(path, resume_step=2)
    log.append(LogRow(3, 0.3, 1e-3, 1.0, 0.3, 0))
    log.close()
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert [r.step for r in read_log(path)] == [1, 2, 3]
    assert (tmp_path / "log.csv.torn").read_text() == "3,0.3\n"


def test_only_the_main_process_checks_out_so_a_worker_never_races_its_claim(tmp_path, tiny_checkpoint, data,
                                                                             monkeypatch):
    """Under `accelerate launch`, rank 0 creates and locks OUT (`claim_out`) while rank 1
    may still be checking its inputs: rank 1 must not find OUT "occupied" and exit 2
    (it did, one launch in two, with nothing printed)."""
    from live.contract.cli import CliError
    from model.train.cli import _check_inputs, build_parser
    from model.train.settings import TrainSettings
    from model.train.trainer import claim_out

    manifest, cache = data
    out = tmp_path / "out"
    args = build_parser().parse_args(_args(tiny_checkpoint, manifest, cache, out, "--lr", "1e-3"))
    settings = TrainSettings(**vars(args))
    lock = claim_out(out)  # what rank 0 does first
    try:
        monkeypatch.setenv("RANK", "1")
        _check_inputs(settings)  # the worker's inputs pass; OUT is rank 0's to check
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(CliError, match="exists"):
            _check_inputs(settings)
    finally:
        lock.release()
