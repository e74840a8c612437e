"""Conventions shared by every command line of the project (the one documentation of
them; docs link here). The command lines (tests/test_conventions_kept.py keeps the list true):

    python -m live.run | live.study | live.testclip | model.checkpoint.build | model.serve.infer |
              model.train | model.evaluate | model.data.builders | model.data.curate |
              quant.footprint | quant.experiments | app.py

* Errors are one line on stderr, ``error: <what> (<file or option>)``, saying what to do;
  never a traceback on the terminal. A CLI with a log file writes the full traceback of
  a failure there, once per distinct error (`log_traceback`); without one,
  ``OMNI_TRACEBACK=1`` shows it (debugging).
* Exit codes: 0 success; ``EXIT_USAGE`` (2) bad arguments or input found before any
  work (a missing or corrupted input file or checkpoint, a bad option, ``--device cuda``
  without CUDA, an output that exists or cannot be written); ``EXIT_RUNTIME`` (1) a
  failure while working (a model that does not load, a decode error mid-run, a
  non-finite loss); ``EXIT_INTERRUPTED`` (130) Ctrl-C.
* Outputs are checked before anything slow loads (`check_out`): an existing output
  file or non-empty folder is refused unless ``--overwrite`` (or ``--resume`` where the
  command can continue a run); nothing is overwritten silently.
* ``--device`` defaults to ``DEVICE_DEFAULT`` everywhere and is checked by
  `resolve_device`.
* A CLI's ``main`` is ``return run_main(work, ...)``: `run_main` maps what `work`
  raises to the line and the exit code (`fail`).
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

EXIT_OK = 0
EXIT_RUNTIME = 1  # failed while working
EXIT_USAGE = 2  # bad arguments or input, found before any work (argparse uses 2 too)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
DEVICE_DEFAULT = "auto"  # cuda if available, else cpu
DEVICE_HELP = "auto (cuda if available, else cpu), cpu, cuda, cuda:N"
TRACEBACK_ENV = "OMNI_TRACEBACK"  # set (to anything) to see tracebacks of a CLI without a log


# Library lines that say nothing to a user of this project, on every run that loads a
# checkpoint (transformers imports torchao's quantizer, which tries its CUDA-only kernel
# libraries): (logger, message start). They would bury the one `error:` line.
LIBRARY_NOISE = (
    ("torchao", "Failed to load "),  # CUDA kernel .so files; not used by the CPU paths
    ("torch.utils._pytree", "<enum "),  # torchao registering Enum constants (deprecation)
    ("torchao.kernel.intmm", "Warning: Detected no triton"),  # CPU builds have no triton; no CPU path needs it
)


class _DropNoise(logging.Filter):
    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith(self.start):
            return True
        torch = sys.modules.get("torch")  # on a CUDA machine a kernel that fails to load matters
        return bool(self.start == "Failed to load " and torch is not None and torch.cuda.is_available())


def quiet_library_noise() -> None:
    """Drop the `LIBRARY_NOISE` lines (idempotent; done when ``live`` is imported)."""
    for name, start in LIBRARY_NOISE:
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) and f.start == start for f in log.filters):
            log.addFilter(_DropNoise(start))


class CliError(Exception):
    """A usage or input error: reported as one line on stderr, exit ``EXIT_USAGE``."""


def one_line(err: BaseException | str) -> str:
    """The first line of an error message (library messages can span many lines),
    or the exception's type when it has no message."""
    text = str(err).strip()
    if text:
        return text.splitlines()[0]
    return type(err).__name__ if isinstance(err, BaseException) else "unknown error"


def fail(err: BaseException, usage: tuple[type[BaseException], ...] = (), note: str = "") -> int:
    """Report `err` on stderr as ``error: <one line><note>`` and return the exit code it
    means: ``EXIT_USAGE`` for a `CliError` (or one of the `usage` types),
    ``EXIT_INTERRUPTED`` for Ctrl-C, ``EXIT_RUNTIME`` for anything else. An unexpected
    error type (not ours, not an I/O, value or runtime error) is named in the line."""
    if isinstance(err, KeyboardInterrupt):
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    text = one_line(err)
    if _report_type(err, usage) and text != type(err).__name__:
        text = f"{type(err).__name__}: {text}"
    print(f"error: {text}{note}", file=sys.stderr)
    return EXIT_USAGE if isinstance(err, (CliError, *usage)) else EXIT_RUNTIME


def _report_type(err: BaseException, usage: tuple[type[BaseException], ...]) -> bool:
    """Whether a message alone says enough (our errors and the library's I/O and value
    errors), or the type name must go with it (an unexpected error: a bug, or a library
    assertion)."""
    return not isinstance(err, (CliError, OSError, ValueError, RuntimeError, *usage))


_logged: set[tuple[str, str]] = set()  # (type, first line) already written, per process


def log_traceback(err: BaseException, log: str | Path) -> bool:
    """Append `err`'s full traceback to the file `log` once per distinct error (its type
    and first line) in this process; returns whether it was written. Never raises: a
    log that cannot be written must not hide the error being reported."""
    key = (type(err).__name__, one_line(err))
    if key in _logged:
        return False
    try:
        log = Path(log)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a", encoding="utf-8") as f:
            f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {key[0]}: {key[1]}\n")
            f.write("".join(traceback.format_exception(type(err), err, err.__traceback__)))
    except OSError:
        return False
    _logged.add(key)
    return True


def run_main(work: Callable[[], int | None], usage: tuple[type[BaseException], ...] = (),
             log: str | Path | Callable[[], str | Path | None] | None = None) -> int:
    """Run a command line's `work()` under the conventions above and return its exit
    code: `work`'s own (None: ``EXIT_OK``), or `fail`'s for whatever it raised.

    usage: further exception types that mean bad input (``EXIT_USAGE``).
    log: the CLI's log file (or a function giving it once known, None while there is
        none): the full traceback of a failure while working goes there
        (`log_traceback`), never to the terminal. With no log, ``OMNI_TRACEBACK=1`` in
        the environment prints it on stderr (for debugging).
    """
    try:
        code = work()
    except SystemExit:  # argparse's usage errors: already reported, exit 2
        raise
    except BaseException as err:  # noqa: BLE001 - the CLI's one place for every error
        note = ""
        if not isinstance(err, (CliError, KeyboardInterrupt, *usage)):
            where = log() if callable(log) else log
            if where is not None and log_traceback(err, where):
                note = f" (traceback in {where})"
            elif where is None and os.environ.get(TRACEBACK_ENV):
                traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
        return fail(err, usage, note)
    return EXIT_OK if code is None else code


def resolve_device(device: str) -> str:
    """The ``--device`` rule: "auto" → "cuda" when a GPU is visible, else "cpu"; "cpu",
    "cuda" and "cuda:N" are checked against the machine. Raises CliError naming
    ``--device`` (a usage error, found before anything loads)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device)
    except (RuntimeError, ValueError):
        raise CliError(f"--device {device!r} is not a device; use {DEVICE_HELP}") from None
    if kind.type == "cuda":
        if not torch.cuda.is_available():
            raise CliError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if kind.index is not None and kind.index >= torch.cuda.device_count():
            raise CliError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) visible")
    elif kind.type != "cpu":
        raise CliError(f"--device {device}: not supported; use {DEVICE_HELP}")
    return device


def _nearest_existing(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
    return Path(".")


def check_out(path: str | Path, overwrite: bool = False, *, folder: bool = True,
              option: str = "--out", resume: bool | None = None) -> Path:
    """Check an output before any slow work; nothing is created or removed.

    folder: the output is a folder (else a file). An existing output is refused unless
    `overwrite` (an empty folder counts as absent), or `resume` (None: the command
    cannot resume; False: it can, the user did not ask; True: asked); a file where a folder is wanted (or the reverse) and a location
    that cannot be written are refused. Raises CliError naming `option` and what to do.
    """
    path = Path(path)
    what = "folder" if folder else "file"
    if path.exists():
        if folder and not path.is_dir():
            raise CliError(f"{option} {path} is a file, not a folder; give a folder path")
        if not folder and path.is_dir():
            raise CliError(f"{option} {path} is a folder, not a file; give a file path")
        occupied = any(path.iterdir()) if folder else True
        if occupied and not (overwrite or resume):
            hint = "--overwrite to replace it" + (" or --resume to continue it" if resume is not None else "")
            raise CliError(f"{option} {path} exists; pass {hint}, or choose another {what}")
    base = _nearest_existing(path if folder else path.parent)
    if not base.is_dir():
        raise CliError(f"{option} {path}: {base} is a file, so the {what} cannot be created")
    try:  # the real test (permission bits do not bind root; read-only mounts, quotas)
        with tempfile.TemporaryFile(dir=base):
            pass
    except OSError as err:
        raise CliError(f"{option} {path}: {base} is not writable ({err.strerror}); choose another {what}") from None
    return path
