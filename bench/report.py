"""How every benchmark reports: one JSON object on stdout, and the same object written
whole to ``--out`` when given."""
from __future__ import annotations

import json
from pathlib import Path

from live.contract.files import write_json


def emit(result: dict, out: str | Path | None = None) -> None:
    print(json.dumps(result, indent=1))
    if out:
        write_json(out, result)
