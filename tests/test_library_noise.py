"""Importing torchao on a CPU build prints nothing the user must read: the lines in
`live.contract.cli.LIBRARY_NOISE` are dropped once `live` is imported (the page showed
"warning: Warning: Detected no triton" at its first model load)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMPORT_TIMEOUT_S = 300


def test_torchao_import_is_quiet_once_live_is_imported():
    code = "import live, logging; logging.basicConfig(); import torchao.kernel.intmm; import torchao.quantization"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=IMPORT_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    assert "triton" not in proc.stderr and "Failed to load" not in proc.stderr, proc.stderr


def test_without_the_filter_the_line_is_there():
    code = "import logging; logging.basicConfig(); import torchao.kernel.intmm"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=IMPORT_TIMEOUT_S)
    assert "Detected no triton" in proc.stderr  # so the first test can fail
