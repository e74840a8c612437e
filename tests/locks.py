"""Test helper: another live process holding an output's lock, as a running training,
curation run or review page would."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOLDER = ("import sys, time; from live.contract.appendfile import OutputLock; OutputLock(sys.argv[1]).acquire(); "
          "print('held', flush=True); time.sleep(600)")


def hold_lock(target: str | Path) -> subprocess.Popen:
    """A child process that holds `OutputLock(target)` until killed (the caller kills it)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(target)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    line = proc.stdout.readline().strip()
    if line != "held":
        proc.kill()
        raise AssertionError(f"the lock holder did not start (said {line!r})")
    return proc
