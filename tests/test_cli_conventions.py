"""live.contract.cli's helpers, in-process: `run_main` (the exit codes and the one line),
`log_traceback` (once per distinct error) and `check_out` (outputs, checked before work)."""
from __future__ import annotations

import pytest

from live.contract.cli import (EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, CliError, check_out, log_traceback,
                      resolve_device, run_main)


def raising(err: BaseException):
    def work():
        raise err
    return work


def test_run_main_maps_errors_to_codes_and_one_line(capsys, tmp_path):
    assert run_main(lambda: None) == EXIT_OK
    assert run_main(lambda: 3) == 3
    assert run_main(raising(CliError("--x bad\nmore detail"))) == EXIT_USAGE
    assert capsys.readouterr().err == "error: --x bad\n"
    assert run_main(raising(KeyError("k")), usage=(KeyError,)) == EXIT_USAGE
    capsys.readouterr()
    assert run_main(raising(OSError("disk full"))) == EXIT_RUNTIME
    assert capsys.readouterr().err == "error: disk full\n"
    assert run_main(raising(AssertionError("Torch not compiled with CUDA enabled"))) == EXIT_RUNTIME
    assert capsys.readouterr().err == "error: AssertionError: Torch not compiled with CUDA enabled\n"
    assert run_main(raising(KeyboardInterrupt())) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "error: interrupted\n"
    with pytest.raises(SystemExit):  # argparse's own exit passes through
        run_main(raising(SystemExit(2)))


def test_runtime_tracebacks_go_to_the_log_once_per_distinct_error(capsys, tmp_path):
    log = tmp_path / "logs" / "errors.log"
    assert run_main(raising(RuntimeError("boom A")), log=log) == EXIT_RUNTIME
    err = capsys.readouterr().err
    assert err == f"error: boom A (traceback in {log})\n"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: boom A" in text
    run_main(raising(RuntimeError("boom A")), log=log)  # the same error again: logged once
    assert log.read_text() == text
    assert log_traceback(RuntimeError("boom B"), log) and not log_traceback(RuntimeError("boom B"), log)
    assert log.read_text().count("\n--- ") == 1 and log.read_text().startswith("--- ")  # two entries
    run_main(raising(CliError("--out exists")), log=log)  # usage errors have no traceback to keep
    assert "--out exists" not in log.read_text()
    assert run_main(raising(ValueError("late")), log=lambda: None) == EXIT_RUNTIME  # no log known yet
    assert capsys.readouterr().err.endswith("error: late\n")


def test_check_out(tmp_path):
    folder, file = tmp_path / "run", tmp_path / "pred.jsonl"
    assert check_out(folder) == folder and not folder.exists()  # creates nothing
    folder.mkdir()
    check_out(folder)  # an empty folder counts as absent
    (folder / "log.csv").write_text("x")
    with pytest.raises(CliError, match=r"--out .*run exists; pass --overwrite to replace it, or choose"):
        check_out(folder)
    with pytest.raises(CliError, match="--overwrite to replace it or --resume to continue it"):
        check_out(folder, resume=False)
    check_out(folder, overwrite=True)
    check_out(folder, resume=True)
    file.write_text("x")
    with pytest.raises(CliError, match="exists"):
        check_out(file, folder=False)
    with pytest.raises(CliError, match="is a file, not a folder"):
        check_out(file, overwrite=True)
    with pytest.raises(CliError, match="is a folder, not a file"):
        check_out(folder, overwrite=True, folder=False)
    with pytest.raises(CliError, match=r"--cache .*pred.jsonl is a file, so the folder cannot be created"):
        check_out(file / "sub", option="--cache")
    with pytest.raises(CliError, match="not writable"):
        check_out("/proc/no-such-folder/out")  # procfs: no file can be created there


def test_resolve_device(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    for bad, why in (("cuda", "CUDA is not available"), ("cuda:1", "CUDA is not available"),
                     ("gpu", "not a device"), ("meta", "not supported")):
        with pytest.raises(CliError, match=f"--device .*{why}"):
            resolve_device(bad)
