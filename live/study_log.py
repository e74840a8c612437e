"""Study logs: one JSON line per window, durable as soon as it is written.

``StudyLog(root, session, participant)`` appends to ``root/<session>.jsonl``. Every
line is written with one ``write``, then flushed and ``fsync``ed before ``write()``
returns, so a crash, a killed process or a power cut loses at most the window in
flight. Re-opening the same session appends (a study session that was interrupted
goes on in the same file).

Consent: every line carries ``consent`` (true/false: the participant consents to
storing recordings for research) and ``consent_at`` (the wall time it was given, null
without consent). Raw media need it: ``keep_media=True`` without ``consent=True`` is
refused (StudyLogError), and ``set_consent(False)`` (consent withdrawn) stops storing
media at once. ``model.data.curate study`` reads these fields.

No raw video or audio is stored unless ``keep_media=True``: then each window's
sampled frames and its 16 kHz audio go to ``root/<session>_media/window_<run>_<index>.npz``
(arrays ``frames`` (T, H, W, 3) uint8 and ``audio`` (n,) float32, plus ``rate``).
Whole files (media, CSV exports) are written by ``live.files.write_whole``: a temporary name,
fsync, rename; a reader never sees one half-written.

Ownership (``LogOwners``): a study session id belongs to the browser session that
opened it; another one cannot open it (and so cannot append to it or export it).

This module knows no model: a record is any JSON-able dict (the app writes the window
record, ``live.engine.WindowEvent.to_json``, plus run/source/plan); ``CSV_FIELDS``
names the columns exported to CSV (list values are joined with "; ").
"""
from __future__ import annotations

import csv
import json
import os
import re
import threading
import time
from pathlib import Path

import numpy as np

from .files import write_whole

# Session and participant ids become file names: keep them to a safe alphabet.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CSV_FIELDS = (
    "session", "participant", "wall_time", "source", "run", "index", "start", "end",
    "analysed", "reason", "label", "labels", "explanation", "pending", "error", "model",
    "plan", "queue_s", "analyse_s", "latency_s", "face_track", "speech_ratio",
    "self_report", "self_report_at", "consent", "consent_at",
    "event", "condition", "type", "media_time",  # event markers (live.markers): type "marker"
)
KEEP_MEDIA_NEEDS_CONSENT = ("storing raw frames + audio needs the participant's consent to storing "
                            "recordings for research")


class StudyLogError(ValueError):
    """A bad session/participant id or an unreadable log."""


def check_id(kind: str, value: str) -> str:
    """``value`` stripped, or StudyLogError saying what a valid ``kind`` id looks like."""
    v = (value or "").strip()
    if not ID_PATTERN.match(v):
        raise StudyLogError(
            f"{kind} id {value!r} is not valid: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return v


class StudyLog:
    """Append-only, fsynced JSONL log of one study session. Thread-safe."""

    def __init__(self, root: str | Path, session: str, participant: str,
                 keep_media: bool = False, consent: bool = False) -> None:
        self.session = check_id("session", session)
        self.participant = check_id("participant", participant)
        if keep_media and not consent:
            raise StudyLogError(KEEP_MEDIA_NEEDS_CONSENT)
        self.consent = bool(consent)
        self.consent_at = round(time.time(), 3) if consent else None  # wall time it was given
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / f"{self.session}.jsonl"
        self.keep_media = keep_media
        self.media_dir = self.root / f"{self.session}_media"
        self._lock = threading.Lock()
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> dict:
        """Append ``record`` (plus session, participant, wall_time) as one line and
        make it durable before returning. Returns the dict as written."""
        line = {"session": self.session, "participant": self.participant,
                "wall_time": round(time.time(), 3), **record,
                "consent": self.consent, "consent_at": self.consent_at}  # the log's, never the caller's
        text = json.dumps(line, ensure_ascii=False, default=jsonable) + "\n"
        with self._lock:
            if self._f is None:
                raise StudyLogError(f"study log {self.path} is closed")
            self._f.write(text)
            self._f.flush()
            os.fsync(self._f.fileno())  # the line survives a killed process / power cut
        return line

    def set_consent(self, consent: bool) -> None:
        """Consent given (now) or withdrawn: withdrawn also stops storing raw media."""
        with self._lock:
            if bool(consent) != self.consent:
                self.consent = bool(consent)
                self.consent_at = round(time.time(), 3) if consent else None
            if not consent:
                self.keep_media = False

    def save_media(self, name: str, frames: np.ndarray | None, audio: np.ndarray | None,
                   rate: int) -> Path | None:
        """Store one window's frames + audio (only when ``keep_media``); the path or None."""
        if not (self.keep_media and self.consent):
            return None
        self.media_dir.mkdir(parents=True, exist_ok=True)
        out = self.media_dir / f"{name}.npz"
        with write_whole(out, "wb") as f:
            np.savez_compressed(
                f,
                frames=np.zeros((0,), np.uint8) if frames is None else frames,
                audio=np.zeros((0,), np.float32) if audio is None else audio,
                rate=np.int32(rate),
            )
        return out

    def banner(self) -> str:
        """One Markdown line telling the participant/researcher that logging is on."""
        media = ("raw frames + audio ARE stored (participant consented)" if self.keep_media
                 else "no raw video or audio is stored")
        return (f"📝 **Study logging is ON**: participant `{self.participant}`, session "
                f"`{self.session}` → `{self.path}` ({media}).")

    def export_csv(self, out: str | Path | None = None) -> Path:
        """Write the whole session (every run that appended to it) as CSV."""
        return write_csv(read_jsonl(self.path), out or self.path.with_suffix(".csv"))

    @property
    def closed(self) -> bool:
        return self._f is None

    def close(self) -> None:
        with self._lock:
            if self._f is not None:
                self._f.close()
                self._f = None

    def __enter__(self) -> "StudyLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LogOwners:
    """Which owner (the app passes the browser's Gradio session hash) holds which
    study session id, for the life of the process. Thread-safe.

    ``claim(root, session, owner)``: a new id is taken by ``owner``; the same owner
    may re-open it (and append); anyone else is refused, and so is an id whose log
    already exists on disk from an earlier run (resuming one is the operator's call:
    ``app.py --log-session``, which ``reserve``s it for the app)."""

    def __init__(self) -> None:
        self._owner: dict[tuple[Path, str], str] = {}
        self._lock = threading.Lock()

    def claim(self, root: str | Path, session: str, owner: str) -> str:
        sid = check_id("session", session)
        key = (Path(root).resolve(), sid)
        with self._lock:
            who = self._owner.get(key)
            if who is None and (Path(root) / f"{sid}.jsonl").exists():
                raise StudyLogError(f"study session {sid!r} already has a log: choose a new session "
                                    "id (an earlier log is resumed with app.py --log-session)")
            if who is not None and who != owner:
                raise StudyLogError(f"study session {sid!r} is in use by another browser session: "
                                    "choose another session id")
            self._owner[key] = owner
        return sid

    def reserve(self, root: str | Path, session: str, owner: str) -> None:
        """Take ``session`` for ``owner`` whatever is on disk (the operator's own log)."""
        with self._lock:
            self._owner[(Path(root).resolve(), check_id("session", session))] = owner


def read_jsonl(path: str | Path, allow_partial_tail: bool = False) -> list[dict]:
    """Every record of a JSONL log. A bad line is an error naming its number, except
    (``allow_partial_tail``) a last line without its newline: the one a process
    killed mid-write may leave."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    tail_complete = text.endswith("\n") or not text
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if allow_partial_tail and i == len(lines) and not tail_complete:
                break
            raise StudyLogError(f"{path}:{i}: not a JSON line ({e})") from None
    return out


def write_csv(records: list[dict], out: str | Path, fields=CSV_FIELDS) -> Path:
    """``records`` → CSV with ``fields`` as columns (lists joined with "; ")."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with write_whole(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        w.writeheader()
        for r in records:
            w.writerow({k: "; ".join(map(str, v)) if isinstance(v, (list, tuple)) else v
                        for k, v in r.items()})
    return out


def jsonable(o):
    """``json.dumps(default=)``: numpy scalars/arrays and paths → plain JSON."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")
