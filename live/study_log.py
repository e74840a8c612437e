"""Study logs: one JSON line per window, durable as soon as it is written.

``StudyLog(root, session, participant)`` appends to ``root/<session>.jsonl`` through
``live.contract.appendfile.AppendFile`` (one writer, torn tail repaired, whole fsynced
lines, 0600 files in 0700 folders); re-opening a session appends. Every line carries
``consent`` / ``consent_at``; raw media (``keep_media=True``, needs ``consent=True``)
go to ``root/<session>_media/window_<run>_<index>.npz``, named in the line as ``media``
and never overwritten. ``new_run_id`` makes ``(run, index)`` name one window of one
recording; ``withdraw`` deletes a participant's media (and on request records) with a
line in ``root/audit.jsonl``; ``LogOwners`` says which browser session owns which id.
The full rules: docs/app.md "Study logs" and docs/study.md.

This module knows no model: a record is any JSON-able dict (the app writes the window
record, ``live.engine.WindowEvent.to_json``, plus run/source/plan); ``CSV_FIELDS``
names the columns exported to CSV (list values are joined with "; ").
"""
from __future__ import annotations

import csv
import getpass
import glob
import json
import os
import re
import secrets
import threading
import time
from pathlib import Path

import numpy as np

from live.contract.appendfile import AppendFile, OutputLock, OutputLocked, WriteFailed, private_dir
from live.contract.files import write_whole

# Session and participant ids become file names: keep them to a safe alphabet.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
AUDIT_NAME = "audit.jsonl"  # the study folder's withdrawal audit trail (not a session)
FAILURES_NAME = "failures.jsonl"  # live.study analyse: recordings that could not be read
RESERVED_SESSIONS = ("audit", "failures")  # session ids taken by the study folder's own files
NOT_SESSIONS = frozenset({AUDIT_NAME, FAILURES_NAME})
REASON_MAX_CHARS = 2000  # a withdrawal's reason: a sentence or two
AUDIT_WAIT_S = 10.0  # s a withdrawal waits for another process's audit line
RUN_RANDOM = 1000  # run ids: wall ms * RUN_RANDOM + a random draw below it
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # spreadsheet formula triggers (CSV injection)
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


ID_SHOWN_CHARS = 40  # characters of a bad id repeated in a message (a 100 KB id is not echoed)


def short(value, limit: int = ID_SHOWN_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters (with the length said): what a message
    repeats of an id or text a client sent."""
    if not isinstance(value, str):
        return f"of type {type(value).__name__}"
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value)} characters)"


def check_id(kind: str, value: str) -> str:
    """``value`` stripped, or StudyLogError saying what a valid ``kind`` id looks like."""
    v = value.strip() if isinstance(value, str) else ""
    if not ID_PATTERN.match(v):
        raise StudyLogError(
            f"{kind} id {short(value)} is not valid: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    if kind == "session" and v.lower() in RESERVED_SESSIONS:
        raise StudyLogError(f"session id {v!r} is reserved for the study folder's own files: choose another")
    return v


_run_lock = threading.Lock()
_last_run = 0


def new_run_id() -> int:
    """A run id unique across tabs, processes and restarts: the wall time in ms times
    RUN_RANDOM plus a random draw below RUN_RANDOM, and in one process always above the
    last one. Two processes collide only by starting a run in the same millisecond and
    drawing the same number, and even then no media file is overwritten (`StudyLog`
    refuses). An int (media names format it ``{run:03d}``) below 2**53, so exact in
    JSON and JavaScript."""
    global _last_run
    with _run_lock:
        rid = int(time.time() * 1000) * RUN_RANDOM + secrets.randbelow(RUN_RANDOM)
        _last_run = rid = max(rid, _last_run + 1)
        return rid


def media_name(session: str, run: int, index: int) -> str:
    """Where the media of window ``(run, index)`` of ``session`` go, relative to the study folder."""
    return f"{session}_media/window_{run:03d}_{index:05d}.npz"


class StudyLog:
    """Append-only, fsynced JSONL log of one study session, owned by this process while
    open (``OutputLocked`` when another process writes it). Thread-safe."""

    def __init__(self, root: str | Path, session: str, participant: str,
                 keep_media: bool = False, consent: bool = False) -> None:
        self.session = check_id("session", session)
        self.participant = check_id("participant", participant)
        if keep_media and not consent:
            raise StudyLogError(KEEP_MEDIA_NEEDS_CONSENT)
        self.consent = bool(consent)
        self.consent_at = round(time.time(), 3) if consent else None  # wall time it was given
        self.root = private_dir(root)
        self.path = self.root / f"{self.session}.jsonl"
        self.keep_media = keep_media
        self.media_dir = self.root / f"{self.session}_media"
        self._lock = threading.RLock()
        self._out: AppendFile | None = AppendFile(self.path)  # lock, torn tail repaired, 0600

    def write(self, record: dict, media: str | None = None) -> dict:
        """Append ``record`` (plus session, participant, wall_time, consent and
        ``media``: the window's media file, relative to the study folder, or None) as
        one line and make it durable before returning. Returns the dict as written.
        OSError naming the file when it cannot be written (a full disk)."""
        line = {"session": self.session, "participant": self.participant,
                "wall_time": round(time.time(), 3), **record,
                "consent": self.consent, "consent_at": self.consent_at,  # the log's, never the caller's
                "media": media}
        text = json.dumps(line, ensure_ascii=False, default=jsonable)
        with self._lock:
            if self._out is None:
                raise StudyLogError(f"study log {self.path} is closed")
            self._out.append(text)  # whole line, fsynced: it survives a kill / power cut
        return line

    def write_window(self, record: dict, frames: np.ndarray | None, audio: np.ndarray | None,
                     rate: int) -> dict:
        """A window record (with int ``run`` and ``index``) and, when media are kept
        (``keep_media`` and consent), its frames + audio. The line names the media file
        and is written first, so a withdrawal finds every media file from the lines;
        an existing media file is never overwritten (StudyLogError, nothing written)."""
        with self._lock:
            if not (self.keep_media and self.consent):
                return self.write(record)
            name = media_name(self.session, record["run"], record["index"])
            if (self.root / name).exists():
                raise StudyLogError(f"{self.root / name} exists: window ({record['run']}, "
                                    f"{record['index']}) was recorded before; not overwritten")
            line = self.write(record, media=name)
            self._save(self.root / name, frames, audio, rate)
            return line

    def set_consent(self, consent: bool) -> None:
        """Consent given (now) or withdrawn: withdrawn also stops storing raw media."""
        with self._lock:
            if bool(consent) != self.consent:
                self.consent = bool(consent)
                self.consent_at = round(time.time(), 3) if consent else None
            if not consent:
                self.keep_media = False

    def _save(self, out: Path, frames, audio, rate: int) -> Path:
        """The media file written whole (0600); OSError naming it when it cannot be."""
        try:
            private_dir(out.parent)
            with write_whole(out, "wb", private=True) as f:
                np.savez_compressed(
                    f,
                    frames=np.zeros((0,), np.uint8) if frames is None else frames,
                    audio=np.zeros((0,), np.float32) if audio is None else audio,
                    rate=np.int32(rate),
                )
        except OSError as e:  # a full disk: say which file
            raise WriteFailed(e.errno, f"could not write {out}: {e.strerror or e}") from e
        return out

    def banner(self) -> str:
        """One Markdown line telling the participant/researcher that logging is on."""
        media = ("raw frames + audio ARE stored (participant consented)" if self.keep_media and self.consent
                 else "no raw video or audio is stored")
        return (f"📝 **Study logging is ON**: participant `{self.participant}`, session "
                f"`{self.session}` → `{self.path}` ({media}).")

    def export_csv(self, out: str | Path | None = None) -> Path:
        """Write the whole session (every run that appended to it) as CSV."""
        return write_csv(read_jsonl(self.path), out or self.path.with_suffix(".csv"))

    @property
    def closed(self) -> bool:
        return self._out is None

    def close(self) -> None:
        with self._lock:
            if self._out is not None:
                self._out.close()
                self._out = None

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


def session_logs(root: str | Path) -> list[Path]:
    """The study logs (``<session>.jsonl``) of a study folder, sorted by name: not its
    audit trail or failures list, nor a log still being written under a subfolder."""
    return sorted(p for p in Path(root).glob("*.jsonl") if p.is_file() and p.name not in NOT_SESSIONS)


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


def csv_cell(value):
    """One CSV cell: lists joined with "; "; text a spreadsheet would run as a formula
    (starting with = + - @, a tab or a carriage return) gets a leading ' so it is shown
    as text (CSV injection). Numbers stay numbers (a negative one is not text)."""
    if isinstance(value, (list, tuple)):
        value = "; ".join(map(str, value))
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def write_csv(records: list[dict], out: str | Path, fields=CSV_FIELDS) -> Path:
    """``records`` → CSV with ``fields`` as columns (``csv_cell``), owner-only (0600)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with write_whole(out, "w", private=True, newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        w.writeheader()
        for r in records:
            w.writerow({k: csv_cell(v) for k, v in r.items()})
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


# ----------------------------------------------------------------------- withdrawal
def withdraw(root: str | Path, participant: str, records: bool = False, reason: str = "") -> dict:
    """A participant withdraws: delete every media file of theirs in the study folder
    ``root`` (every session), and with ``records`` their lines too (each session log
    rewritten whole without them; its CSV export rewritten or removed; their torn
    fragments dropped). Appends one line to ``root/audit.jsonl`` saying what was
    deleted, when, by whom and why (``reason``), and returns that line as a dict:
    ``{"action", "at", "wall_time", "participant", "records", "reason",
    "media_deleted": [paths relative to root], "records_deleted": {session: n},
    "sessions": [sessions with their lines], "by": {"user", "pid"}}``.

    Media are found from the lines: a line's ``media`` field, or for a line without one
    (older logs) the name its ``(run, index)`` gives,
    unless another participant's line of the same session gives that name too. ``records`` takes each session's lock first (all or
    nothing): a session another process writes is refused with ``OutputLocked``
    naming it. StudyLogError for a bad id, reason or folder."""
    pid = check_id("participant", participant)
    if not isinstance(records, bool):
        raise StudyLogError(f"records must be true or false, got {short(records)}")
    if not isinstance(reason, str) or len(reason) > REASON_MAX_CHARS:
        raise StudyLogError(f"reason must be text of at most {REASON_MAX_CHARS} characters, got {short(reason)}")
    root = Path(root)
    if not root.is_dir():
        raise StudyLogError(f"{root}: no such study folder")
    logs = session_logs(root)
    locks = [OutputLock(log) for log in logs] if records else []
    try:
        for lock in locks:
            lock.acquire()
        media: list[str] = []
        removed: dict[str, int] = {}
        sessions: list[str] = []
        for log in logs:
            lines = _parsed_lines(log)
            mine = [o for _, o in lines if isinstance(o, dict) and o.get("participant") == pid]
            if not mine and not records:
                continue
            others = [o for _, o in lines if isinstance(o, dict) and o.get("participant") != pid]
            media += _delete_media(root, log.stem, mine, others)
            if records:
                n = _drop_lines(log, pid, lines)
                if n:
                    removed[log.stem] = n
            if mine:
                sessions.append(log.stem)
    finally:
        for lock in locks:
            lock.release()
    entry = {"action": "withdraw", "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "wall_time": round(time.time(), 3), "participant": pid, "records": records,
             "reason": reason, "media_deleted": media, "records_deleted": removed,
             "sessions": sessions, "by": {"user": _user(), "pid": os.getpid()}}
    _append_audit(root / AUDIT_NAME, entry)
    return entry


def _parsed_lines(log: Path) -> list[tuple[bytes, object]]:
    """Each line of ``log`` (bytes, newline kept) with its JSON value (None when it is
    not JSON: a torn tail another process is still writing, or damage)."""
    out = []
    for raw in log.read_bytes().splitlines(keepends=True):
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        out.append((raw, obj))
    return out


def _participant_marker(pid: str) -> re.Pattern:
    """Matches a participant field of ``pid`` in text that is not whole JSON (a torn line)."""
    return re.compile(rb'"participant":\s*' + re.escape(json.dumps(pid).encode()))


def _delete_media(root: Path, session: str, mine: list[dict], others: list[dict]) -> list[str]:
    """Delete the media files ``mine`` name (module docstring); their paths relative to ``root``."""
    def legacy(o: dict) -> str | None:
        # lines without a media name (older logs, whose media were stored apart):
        # the name their (run, index) gives
        run, index = o.get("run"), o.get("index")
        if isinstance(o.get("media"), str) or type(run) is not int or type(index) is not int:
            return None
        return media_name(session, run, index)

    names = {o["media"] for o in mine if isinstance(o.get("media"), str)}
    shared = {legacy(o) for o in others}
    names |= {n for n in map(legacy, mine) if n and n not in shared}
    media_dir = (root / f"{session}_media").resolve()
    deleted = []
    for name in sorted(names):
        path = (root / name).resolve()
        if path.parent != media_dir:  # a line naming a file elsewhere is not followed
            continue
        for leftover in media_dir.glob(glob.escape(path.name) + ".*.part"):
            leftover.unlink(missing_ok=True)  # a write cut short by a crash
        if path.is_file():
            path.unlink()
            deleted.append(name)
    if media_dir.is_dir() and not any(media_dir.iterdir()):
        media_dir.rmdir()
    return deleted


def _drop_lines(log: Path, pid: str, lines: list[tuple[bytes, object]]) -> int:
    """Rewrite ``log`` whole without ``pid``'s lines (we hold its lock); its CSV export
    is rewritten (or removed when nothing is left) and its ``.torn`` fragments of
    ``pid`` are dropped. Returns the number of lines removed."""
    marker = _participant_marker(pid)

    def theirs(raw: bytes, obj) -> bool:
        if isinstance(obj, dict):
            return obj.get("participant") == pid
        return bool(marker.search(raw))

    keep = [raw for raw, obj in lines if not theirs(raw, obj)]
    n = len(lines) - len(keep)
    torn = log.with_name(log.name + ".torn")
    if torn.is_file():
        rest = [raw for raw in torn.read_bytes().splitlines(keepends=True) if not marker.search(raw)]
        _rewrite_or_remove(torn, rest)
    if not n:
        return 0
    _rewrite_or_remove(log, keep)
    csv_path = log.with_suffix(".csv")
    if csv_path.is_file():
        left = [o for raw, o in lines if isinstance(o, dict) and not theirs(raw, o)]
        if left:
            write_csv(left, csv_path)
        else:
            csv_path.unlink()
    return n


def _rewrite_or_remove(path: Path, lines: list[bytes]) -> None:
    if not lines:
        path.unlink(missing_ok=True)
        return
    with write_whole(path, "wb", private=True) as f:
        f.write(b"".join(lines))


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's uid)
        return str(os.getuid())


def _append_audit(path: Path, entry: dict) -> None:
    """One audit line through ``AppendFile``; another process's audit write is waited for."""
    deadline = time.monotonic() + AUDIT_WAIT_S
    while True:
        try:
            with AppendFile(path) as audit:
                audit.append_json(entry)
            return
        except OutputLocked:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
