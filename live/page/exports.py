"""The File tab's exports: a file's window records → JSONL + CSV in a fresh owner-only
folder (``export_records``). Below ``live.page.render`` (which offers them for download) and
``live.page.file_analysis`` (which makes the records)."""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from live.contract.appendfile import WriteFailed, private_dir
from live.contract.files import write_whole
from live.study_log import jsonable, write_csv


def export_records(records: list[dict], stem: str, out_dir: str | Path) -> tuple[str, str]:
    """Write records as JSONL + CSV into a fresh owner-only folder under ``out_dir``
    (the app's study folder's ``exports/``: never the system temp dir); (jsonl path,
    csv path)."""
    try:
        folder = tempfile.mkdtemp(prefix=f"{time.strftime('%Y%m%d-%H%M%S')}-", dir=private_dir(out_dir))
        out = Path(folder) / stem
        jsonl = out.with_suffix(".jsonl")
        with write_whole(jsonl, "w", private=True, encoding="utf-8") as f:
            f.write("".join(json.dumps(r, ensure_ascii=False, default=jsonable) + "\n" for r in records))
        return str(jsonl), str(write_csv(records, out.with_suffix(".csv")))
    except OSError as e:  # a full disk: say where
        raise WriteFailed(e.errno, f"could not write the exports under {out_dir}: {e.strerror or e}") from e
