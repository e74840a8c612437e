"""Which recordings a study folder holds, and who is in each (``participants.csv``).

A recording is a file directly in STUDY_DIR whose suffix is one of ``VIDEO_SUFFIXES``
(case-insensitive); its session id is the file's stem. ``participants.csv`` (optional)
has a header and the columns ``recording`` (the file name, or its stem) and
``participant``, and optionally ``consent`` (yes/no, true/false, 1/0: the participant
consents to storing recordings for research; absent or empty: not recorded, false).
Everything here is checked before any work: a bad table, a bad id or two recordings
with one stem are ``CliError`` (exit 2) naming the row or file.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from live.contract.cli import CliError
from live.markers import EventsError, load_events
from live.study_log import StudyLogError, check_id


VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")  # what phones and webcams write
EVENTS_SUFFIX = ".csv"  # events of recording <stem> in --events-dir/<stem>.csv
TRUE = frozenset({"yes", "true", "1", "y"})
FALSE = frozenset({"no", "false", "0", "n", ""})


@dataclass(frozen=True)
class Recording:
    path: Path
    session: str  # the file's stem: its study log is OUT/<session>.jsonl
    participant: str
    consent: bool
    events: Path | None  # its events table, when --events-dir has one


def list_recordings(study_dir: str | Path, participants: str | Path | None = None,
                    events_dir: str | Path | None = None) -> list[Recording]:
    """Every recording of ``study_dir``, sorted by file name. CliError for a folder
    without recordings, a bad id, a stem used twice, or a bad participants table."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise CliError(f"STUDY_DIR {study_dir} is not a folder")
    files = sorted(p for p in study_dir.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        raise CliError(f"STUDY_DIR {study_dir} holds no recording ({', '.join(VIDEO_SUFFIXES)})")
    table = read_participants(participants) if participants else {}
    if events_dir is not None and not Path(events_dir).is_dir():
        raise CliError(f"--events-dir {events_dir} is not a folder")
    seen: dict[str, Path] = {}
    out = []
    for f in files:
        try:
            session = check_id("session", f.stem)
        except StudyLogError as e:
            raise CliError(f"recording {f.name}: its name is its session id: {e}; rename it") from None
        if session in seen:
            raise CliError(f"recordings {seen[session].name} and {f.name} have one stem "
                           f"({session!r}), so one session id: rename one")
        seen[session] = f
        participant, consent = table.get(f.name) or table.get(session) or (session, False)
        ev = Path(events_dir) / f"{session}{EVENTS_SUFFIX}" if events_dir is not None else None
        if ev is not None and ev.is_file():
            try:
                load_events(ev)  # a bad table is found now, not after hours of analysis
            except EventsError as e:
                raise CliError(f"--events-dir: {e}") from None
        else:
            ev = None
        out.append(Recording(f, session, participant, consent, ev))
    unknown = set(table) - {f.name for f in files} - set(seen)
    if unknown:
        raise CliError(f"--participants {participants}: no recording named {sorted(unknown)[0]!r} "
                       f"in {study_dir}")
    return out


def read_participants(path: str | Path) -> dict[str, tuple[str, bool]]:
    """``participants.csv`` → {recording name or stem: (participant id, consent)}."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CliError(f"--participants {path}: cannot read it ({e})") from None
    if not rows or not {"recording", "participant"} <= set(rows[0]):
        raise CliError(f"--participants {path}: needs a header with the columns recording,participant"
                       "[,consent] and one row per recording")
    table = {}
    for i, row in enumerate(rows, 2):
        where = f"--participants {path}:{i}"
        rec = (row.get("recording") or "").strip()
        if not rec or rec in table:
            raise CliError(f"{where}: recording {rec!r} is empty or listed twice")
        try:
            pid = check_id("participant", row.get("participant") or "")
        except StudyLogError as e:
            raise CliError(f"{where}: {e}") from None
        consent = (row.get("consent") or "").strip().lower()
        if consent not in TRUE | FALSE:
            raise CliError(f"{where}: consent {row.get('consent')!r} is not yes/no")
        table[rec] = (pid, consent in TRUE)
    return table
