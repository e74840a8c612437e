"""A study folder's logs as tables: ``windows.csv`` (long format, one row per window)
and ``summary.csv`` (participant x condition x label). Columns: docs/study.md.

Reads any study log folder: an analysed study (``live.study analyse``) or the app's
``--log-dir``. A log's lines are window records, or marker records
(``"type": "marker"``), which are events, not windows.
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from live.study_log import read_jsonl

from . import FAILURES, study_logs

MARKER = "marker"  # the "type" of a marker record (events); a window record has none or "window"
WINDOW_COLUMNS = (
    "participant", "recording", "session", "run", "index", "start", "end", "seconds", "event", "condition",
    "events", "label", "labels", "speech_ratio", "face_present", "self_report", "consent",
    "analysed", "reason",
)
SUMMARY_COLUMNS = (
    "participant", "condition", "label", "windows", "seconds", "share", "dominant",
    "speech_ratio", "face_present",
)
NO_LABEL = ""  # summary's label for windows without one (gated, failed, or none given)


def read_study(out: str | Path) -> tuple[list[dict], list[dict]]:
    """(window records, marker records) of every complete log in ``out``, in log
    order. A last line cut short (an app killed mid-write) is left out."""
    windows, markers = [], []
    for path in study_logs(out):
        for r in read_jsonl(path, allow_partial_tail=True):
            (markers if r.get("type") == MARKER else windows).append(r)
    return windows, markers


def read_failures(out: str | Path) -> list[dict]:
    """The recordings listed in ``failures.jsonl`` that still have no log (the last
    line per recording; one analysed on a later run is no longer a failure)."""
    path = Path(out) / FAILURES
    if not path.is_file():
        return []
    done = {p.stem for p in study_logs(out)}
    last = {r.get("session"): r for r in read_jsonl(path, allow_partial_tail=True)}
    return [r for s, r in sorted(last.items(), key=lambda kv: str(kv[0])) if s not in done]


def window_rows(records: list[dict]) -> list[dict]:
    """Window records → ``WINDOW_COLUMNS`` rows, with ``seconds`` (the media time the
    window's label holds, ``held_seconds``) added for the summary."""
    rows = []
    for r, held in zip(records, held_seconds(records)):
        rows.append({
            "participant": r.get("participant"), "recording": r.get("source"),
            "session": r.get("session"), "run": r.get("run"), "index": r.get("index"),
            "start": r.get("start"), "end": r.get("end"),
            "event": r.get("event"), "condition": r.get("condition"),
            "events": [_marker_name(m) for m in r.get("events") or ()],
            "label": r.get("label"), "labels": r.get("labels") or [],
            "speech_ratio": r.get("speech_ratio"), "face_present": r.get("face_track") is not None,
            "self_report": r.get("self_report"), "consent": r.get("consent"),
            "analysed": r.get("analysed"), "reason": r.get("reason"),
            "seconds": held,
        })
    return rows


def _marker_name(m) -> str:
    return m.get("event", "") if isinstance(m, dict) else str(m)


def _run_key(r: dict) -> tuple:
    return (r.get("session"), r.get("run"))


def held_seconds(records: list[dict]) -> list[float]:
    """The media seconds each window's label holds, aligned with ``records``: from the
    end of the run's previous window (or the window's own start, for the first) to its
    end. Windows overlap; this way a recording's windows cover it once, so a label's
    seconds add up to the time it was the newest result (what the live page showed)."""
    order: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        order[_run_key(r)].append(i)
    held = [0.0] * len(records)
    for idx in order.values():
        prev_end = None
        for i in sorted(idx, key=lambda i: (float(records[i]["end"]), i)):
            start, end = float(records[i]["start"]), float(records[i]["end"])
            held[i] = round(max(0.0, end - (start if prev_end is None else max(start, prev_end))), 3)
            prev_end = end
    return held


def summary_rows(rows: list[dict]) -> list[dict]:
    """``window_rows`` → one row per participant x condition x label (``SUMMARY_COLUMNS``):
    windows, seconds, share of the participant's time in that condition, whether it is
    the dominant label there (most seconds among real labels), mean speech ratio and
    the share of windows with a face."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["participant"] or "", r["condition"] or "", r["label"] or NO_LABEL)].append(r)
    cond_total: dict[tuple, float] = defaultdict(float)
    best: dict[tuple, tuple[float, str]] = {}
    for (p, c, lab), g in groups.items():
        s = sum(x["seconds"] for x in g)
        cond_total[(p, c)] += s
        if lab != NO_LABEL and (s, lab) > best.get((p, c), (-1.0, "")):
            best[(p, c)] = (s, lab)
    out = []
    for (p, c, lab), g in sorted(groups.items()):
        s = sum(x["seconds"] for x in g)
        speech = [x["speech_ratio"] for x in g if x["speech_ratio"] is not None]
        out.append({
            "participant": p, "condition": c, "label": lab, "windows": len(g), "seconds": round(s, 3),
            "share": round(s / cond_total[(p, c)], 4) if cond_total[(p, c)] else 0.0,
            "dominant": lab != NO_LABEL and best.get((p, c), (0, None))[1] == lab,
            "speech_ratio": round(statistics.fmean(speech), 3) if speech else None,
            "face_present": round(sum(bool(x["face_present"]) for x in g) / len(g), 3),
        })
    return out


def window_counts(records: list[dict], failed_recordings: int) -> dict:
    """Windows analysed / gated / failed (error, dropped, pending) and recordings failed."""
    reasons = defaultdict(int)
    for r in records:
        reasons["analysed" if r.get("analysed") else (r.get("reason") or "unknown")] += 1
    return {"windows": len(records), "analysed": reasons["analysed"], "gated": reasons["gated"],
            "failed": reasons["error"] + reasons["pending"] + reasons["unknown"],
            "dropped": reasons["dropped"], "recordings": len({r.get("session") for r in records}),
            "recordings_failed": failed_recordings}
