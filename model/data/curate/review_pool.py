"""HRE review data: the candidates of a review pool and the reviewers' decision logs.

A review pool ``CAND_DIR`` is the output folder of an SRE run over the HRE selection
(``curate sre SEL.jsonl --threshold 0 --out CAND_DIR``): ``sre.jsonl`` (the clips
with a consistent explanation, in the manifest format) and ``clues.jsonl`` (every
cue per clip). The candidates are the ``sre.jsonl`` clips, in file order, with their
cues from ``clues.jsonl``.

Decisions go to ``CAND_DIR/reviews/<reviewer>.jsonl`` (format: docs/curation.md "The
review page"), one line each, fsynced before ``ReviewLog.add`` returns; a clip decided
twice keeps its last decision. One process writes a reviewer's log (its lock
``<reviewer>.jsonl.lock``); a torn last line is ignored by readers and cut off (kept in
``<reviewer>.jsonl.torn``) by ``ReviewLog`` before appending.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from live.study_log import StudyLogError, check_id, read_jsonl
from model.net.answers import split_explanation, split_labels
from live.contract.appendfile import AppendFile, OutputLocked
from model.data.curate.records import CLUES, SRE
from model.data.curate.stages import source_of
from model.data.manifest import iter_jsonl, resolve_media

DECISIONS = ("accept", "edit", "reject")
KEEP = ("accept", "edit")  # decisions that keep a clip in HRE
REVIEWS_DIR = "reviews"  # under CAND_DIR
CUE_NAMES = ("scene", "face", "transcript", "language", "audio_caption")


class ReviewError(ValueError):
    """A review pool or a decision log is unusable; the message says which file."""


@dataclass
class Candidate:
    """One clip to review. ``video``: absolute path (or None); ``sample``: its
    ``sre.jsonl`` line as is (exports start from it)."""

    id: str
    video: Path | None
    explanation: str
    labels: list[str]
    cues: dict = field(default_factory=dict)
    source: str = ""
    source_label: str | None = None
    score: float | None = None
    sample: dict = field(default_factory=dict)


def check_reviewer(reviewer: str) -> str:
    """A reviewer id becomes a file name: the study-log id alphabet (1-64 letters,
    digits, '_', '-', '.')."""
    try:
        return check_id("reviewer", reviewer)
    except StudyLogError as e:
        raise ReviewError(str(e)) from None


def load_candidates(cand_dir: str | Path) -> list[Candidate]:
    """The pool's candidates in ``sre.jsonl`` order (see module docstring).

    Raises:
        ReviewError: no ``sre.jsonl`` in ``cand_dir``, or a line lacks an explanation.
    """
    cand_dir = Path(cand_dir)
    sre = cand_dir / SRE
    if not sre.is_file():
        raise ReviewError(f"{sre}: no such file; CAND_DIR must be the --out folder of "
                          "'curate sre SEL.jsonl --threshold 0'")
    clues: dict[str, dict] = {}
    if (cand_dir / CLUES).is_file():
        for _, row in iter_jsonl(cand_dir / CLUES):
            clues[str(row.get("id"))] = row  # a rerun's later line wins
    out: list[Candidate] = []
    seen: set[str] = set()
    for lineno, row in iter_jsonl(sre):
        sid = row.get("id")
        if not isinstance(sid, str) or sid in seen:
            continue
        seen.add(sid)
        clue = clues.get(sid, {})
        expl, labels = clue.get("explanation"), clue.get("labels")
        if not expl or not labels:  # no clues line: the answer holds both
            answer = row["conversations"][1]["content"] if len(row.get("conversations", [])) > 1 else ""
            expl, labels = split_explanation(answer)
            labels = row.get("labels") or labels
        if not expl:
            raise ReviewError(f"{sre}:{lineno}: {sid}: no explanation to review")
        video, _ = resolve_media(row, cand_dir)
        out.append(Candidate(
            id=sid, video=video.resolve() if video else None, explanation=str(expl),
            labels=[str(x) for x in labels or []],
            cues={k: (clue.get("cues") or {}).get(k) for k in CUE_NAMES},
            source=str(row.get("source") or source_of(row)),
            source_label=row.get("source_label", clue.get("source_label")),
            score=row.get("score", clue.get("score")), sample=row))
    return out


def parse_labels(text: str) -> list[str]:
    """A labels textbox ("worried, tense; sad") → ``["worried", "tense", "sad"]``."""
    return split_labels(text or "")


def reviews_dir(cand_dir: str | Path) -> Path:
    return Path(cand_dir) / REVIEWS_DIR


def reviewers(cand_dir: str | Path) -> list[str]:
    """Reviewer ids with a decision log in the pool, sorted."""
    d = reviews_dir(cand_dir)
    return sorted(p.stem for p in d.glob("*.jsonl")) if d.is_dir() else []


def read_decisions(cand_dir: str | Path, reviewer: str) -> dict[str, dict]:
    """id → last decision of ``reviewer`` (empty when the log does not exist)."""
    path = reviews_dir(cand_dir) / f"{check_reviewer(reviewer)}.jsonl"
    if not path.is_file():
        return {}
    try:
        rows = read_jsonl(path, allow_partial_tail=True)
    except StudyLogError as e:
        raise ReviewError(str(e)) from None
    out: dict[str, dict] = {}
    for i, r in enumerate(rows, 1):
        if not isinstance(r, dict) or r.get("decision") not in DECISIONS or not isinstance(r.get("id"), str):
            raise ReviewError(f"{path}: record {i} is not a review decision: {r!r}")
        out[r["id"]] = r
    return out


def pick_reviewers(cand_dir: str | Path, given: str | None, need: int = 2) -> list[str]:
    """``--reviewers A,B`` checked against the pool, or every reviewer of the pool;
    at least ``need`` of them."""
    have = reviewers(cand_dir)
    names = [check_reviewer(x) for x in given.split(",") if x.strip()] if given else have
    missing = [x for x in names if x not in have]
    if missing:
        raise ReviewError(f"no decisions from reviewer(s) {missing} in {reviews_dir(cand_dir)} "
                          f"(found: {have or 'none'})")
    if len(set(names)) < need:
        raise ReviewError(f"need at least {need} reviewers, got {names or 'none'} "
                          f"in {reviews_dir(cand_dir)}")
    return list(dict.fromkeys(names))


class ReviewLog:
    """One reviewer's append-only, fsynced decision log (`live.contract.appendfile.AppendFile`:
    one writing process per reviewer, a torn last line cut off and kept aside).
    Thread-safe: the tabs of one page share it."""

    def __init__(self, cand_dir: str | Path, reviewer: str) -> None:
        self.reviewer = check_reviewer(reviewer)
        self.cand_dir = Path(cand_dir)
        self.path = reviews_dir(cand_dir) / f"{self.reviewer}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._file = AppendFile(self.path)
        except OutputLocked as e:
            raise ReviewError(f"reviewer {self.reviewer!r}: {e}") from None
        self.decisions = read_decisions(cand_dir, self.reviewer)
        self._lock = threading.Lock()

    def add(self, sid: str, decision: str, explanation: str | None = None,
            labels: Sequence[str] | None = None) -> dict:
        """Append one decision and make it durable before returning it."""
        if decision not in DECISIONS:
            raise ReviewError(f"decision must be one of {DECISIONS}, got {decision!r}")
        rec = {"id": sid, "reviewer": self.reviewer, "decision": decision,
               "explanation": None if decision == "reject" else explanation,
               "labels": None if decision == "reject" else list(labels or []),
               "time": round(time.time(), 3)}
        with self._lock:
            self._file.append_json(rec)
            self.decisions[sid] = rec
        return rec

    def reviewed(self) -> set[str]:
        with self._lock:
            return set(self.decisions)

    def close(self) -> None:
        """Release the log (and its lock) for another process."""
        self._file.close()
