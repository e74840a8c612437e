"""Conventions shared by every command line of the project.

    python -m live.run | model.checkpoint.build | model.serve.infer | model.train |
              model.evaluate | model.data.builders | quant.plan | quant.experiments | app.py

* Errors are one line on stderr, ``error: <what> (<file or option>)``, never a traceback.
* Exit codes: 0 success; ``EXIT_RUNTIME`` (1) a failure while working (a model that
  does not load, a decode error mid-run); ``EXIT_USAGE`` (2) bad arguments or input
  found before any work (missing file, bad option, an output that exists);
  ``EXIT_INTERRUPTED`` (130) Ctrl-C.
* ``--device`` defaults to ``DEVICE_DEFAULT`` everywhere.
"""
from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_RUNTIME = 1  # failed while working
EXIT_USAGE = 2  # bad arguments or input, found before any work (argparse uses 2 too)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
DEVICE_DEFAULT = "auto"  # cuda if available, else cpu
DEVICE_HELP = "auto (cuda if available, else cpu), cpu, cuda, cuda:N"


class CliError(Exception):
    """A usage or input error: reported as one line on stderr, exit ``EXIT_USAGE``."""


def one_line(err: BaseException | str) -> str:
    """The first line of an error message (library messages can span many lines),
    or the exception's type when it has no message."""
    text = str(err).strip()
    if text:
        return text.splitlines()[0]
    return type(err).__name__ if isinstance(err, BaseException) else "unknown error"


def fail(err: BaseException, usage: tuple[type[BaseException], ...] = ()) -> int:
    """Report `err` on stderr as ``error: <one line>`` and return the exit code it means:
    ``EXIT_USAGE`` for a `CliError` (or one of the `usage` types), ``EXIT_INTERRUPTED``
    for Ctrl-C, ``EXIT_RUNTIME`` for anything else."""
    if isinstance(err, KeyboardInterrupt):
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"error: {one_line(err)}", file=sys.stderr)
    return EXIT_USAGE if isinstance(err, (CliError, *usage)) else EXIT_RUNTIME
