"""``python -m live.study export OUT --out EXPORT [--pseudonymise]``: the study's
tables (``windows.csv``, ``summary.csv``) for sharing.

``--pseudonymise`` replaces every participant id, and the recording and session names
(a recording's stem is often the participant's id), by a keyed hash:
``HMAC-SHA256(key, id)``, its first ``PSEUDONYM_HEX`` hex digits. The key is 32 random
bytes made once per study and kept in ``OUT/pseudonym.key`` (0600), never in the
export: the same participant gets the same pseudonym in every export of the study,
and without the key nobody can test a guessed id against the pseudonyms.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from live.contract.appendfile import private_dir
from live.contract.files import PRIVATE_MODE
from live.study_log import write_csv

from . import KEY_FILE, SUMMARY_CSV, WINDOWS_CSV
from .tables import SUMMARY_COLUMNS, WINDOW_COLUMNS, read_study, summary_rows, window_rows

KEY_BYTES = 32  # HMAC-SHA256 key length
PSEUDONYM_HEX = 16  # hex digits kept (64 bits: no collision in any study's size)
PSEUDONYMISED = ("participant", "recording", "session")  # columns whose values are replaced


def study_key(out: str | Path) -> bytes:
    """The study's pseudonym key, made on first use (0600, created exclusively, so two
    exports at once agree on one key)."""
    path = Path(out) / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    except FileExistsError:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
        if len(key) != KEY_BYTES:
            raise ValueError(f"{path} is not a {KEY_BYTES}-byte hex key: restore it from a backup "
                             "(a new key gives every participant a new pseudonym)") from None
        return key
    key = secrets.token_bytes(KEY_BYTES)
    try:
        os.write(fd, key.hex().encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def pseudonym(key: bytes, value: str) -> str:
    """The keyed hash of one id (the same id, the same pseudonym)."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]


def export_tables(out: str | Path, export: str | Path, pseudonymise: bool) -> dict:
    """Write ``windows.csv`` and ``summary.csv`` of study ``out`` into ``export``."""
    records, _ = read_study(out)
    rows = window_rows(records)
    if pseudonymise:
        key = study_key(out)
        for r in rows:
            for col in PSEUDONYMISED:
                if r.get(col) is not None:
                    r[col] = pseudonym(key, str(r[col]))
    export = private_dir(export)
    paths = [write_csv(rows, export / WINDOWS_CSV, WINDOW_COLUMNS),
             write_csv(summary_rows(rows), export / SUMMARY_CSV, SUMMARY_COLUMNS)]
    for p in paths:
        os.chmod(p, PRIVATE_MODE)
    return {"export": str(export), "files": [str(p) for p in paths], "windows": len(rows),
            "pseudonymised": pseudonymise}
