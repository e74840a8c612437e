"""A curation output folder: its files, crash-safe appends, resume state, stats, plot.

Files (one JSON object a line; formats in docs/curation.md):

- ``sre.jsonl``: kept clips, a phase-3 training manifest;
- ``clues.jsonl``: one line per clip processed (kept, rejected or failed): every cue;
- ``rejected.jsonl``: ``{"id", "stage": "consistency"|"review", "reason", "score"}``;
- ``failed.jsonl``: ``{"id", "error"}``;
- ``stats.json``, ``scores.png``, ``run.json`` (the run's settings), ``cache/`` (answers).

Crash safety: a clip's lines are appended clues first, then its outcome line (the
commit); each line is built whole, written with one ``write`` and fsynced. At start a
partial trailing line (a kill mid-write) is cut off, and clues/failed lines of clips
that are about to be (re)done are dropped, so a clip never appears twice.
"""
from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from live.files import save_figure, write_json, write_whole
from model.data.manifest import iter_jsonl

SRE, CLUES, REJECTED, FAILED = "sre.jsonl", "clues.jsonl", "rejected.jsonl", "failed.jsonl"
STATS, SCORES_PNG, RUN, CACHE = "stats.json", "scores.png", "run.json", "cache"
OUTCOME_FILE = {"kept": SRE, "rejected": REJECTED, "failed": FAILED}
RECORD_FILES = (SRE, CLUES, REJECTED, FAILED)


def repair(path: Path) -> int:
    """Cut a partial last line (no trailing newline) off ``path``; returns bytes cut."""
    if not path.is_file():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return 0
        chunk, pos = 1 << 16, size
        keep = 0
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            nl = f.read(pos - start).rfind(b"\n")
            if nl != -1:
                keep = start + nl + 1
                break
            pos = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return size - keep


def read_records(path: Path) -> list[dict]:
    return [obj for _, obj in iter_jsonl(path)] if path.is_file() else []


def rewrite(path: Path, rows: Iterable[dict]) -> None:
    """Replace ``path`` whole (temp file, fsync, rename)."""
    with write_whole(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


class Outputs:
    """Appends records to a folder's files, one whole fsynced line at a time (thread-safe)."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def append(self, name: str, record: dict) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            fd = self._fds.get(name)
            if fd is None:
                fd = self._fds[name] = os.open(self.out / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


def prepare_resume(out: Path, todo_ids: set[str] | None = None) -> set[str]:
    """Make ``out`` consistent after any earlier run (or kill) and return the ids already
    finished (kept or rejected: never redone). Lines of ``clues``/``failed`` for clips
    that are not finished and are in ``todo_ids`` (None: all) are dropped: they are
    redone now."""
    out = Path(out)
    for name in RECORD_FILES:
        repair(out / name)
    done = {r["id"] for name in (SRE, REJECTED) for r in read_records(out / name)}
    failed = read_records(out / FAILED)
    # failures stay recorded unless the clip is redone now (or finished meanwhile)
    failed_keep = [r for r in failed if r["id"] not in done and todo_ids is not None and r["id"] not in todo_ids]
    if len(failed_keep) != len(failed):
        rewrite(out / FAILED, failed_keep)
    # one clues line per clip with an outcome line; orphans (killed between the two) go
    outcome = done | {r["id"] for r in failed_keep}
    clues, seen, clues_keep = read_records(out / CLUES), set(), []
    for r in clues:
        if r["id"] in outcome and r["id"] not in seen:
            seen.add(r["id"])
            clues_keep.append(r)
    if len(clues_keep) != len(clues):
        rewrite(out / CLUES, clues_keep)
    return done


# ------------------------------------------------------------------- stats and plot
def summarize(out: Path, seconds: float | None = None) -> dict:
    """Counts over everything ``out`` holds, per source dataset too."""
    out = Path(out)
    clues = {r["id"]: r for r in read_records(out / CLUES)}
    kept, rejected, failed = (read_records(out / n) for n in (SRE, REJECTED, FAILED))
    by_source: dict[str, dict] = {}

    def src(sid: str) -> dict:
        s = clues.get(sid, {}).get("source") or "unknown"
        return by_source.setdefault(s, {"kept": 0, "rejected": 0, "failed": 0,
                                        "scores": {str(i): 0 for i in range(11)}})

    for kind, rows in (("kept", kept), ("rejected", rejected), ("failed", failed)):
        for r in rows:
            src(r["id"])[kind] += 1
    for c in clues.values():
        if isinstance(c.get("score"), int):
            src(c["id"])["scores"][str(c["score"])] += 1
    stats = {"clips": len(kept) + len(rejected) + len(failed), "kept": len(kept),
             "rejected": len(rejected), "failed": len(failed)}
    stats["rejected_by_stage"] = dict(Counter(r["stage"] for r in rejected))
    stats["failed_by_stage"] = dict(Counter(r["error"].split(":", 1)[0] for r in failed))
    stats["by_source"] = dict(sorted(by_source.items()))
    if seconds is not None:
        stats["seconds"] = round(seconds, 3)
    return stats


def plot_scores(stats: dict, path: Path, threshold: int | None = None) -> None:
    """Fig. 3: a histogram of self-review scores (0–10) per source dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = list(stats["by_source"]) or ["(none)"]
    fig, axes = plt.subplots(1, len(sources), figsize=(4 * len(sources), 3), squeeze=False)
    for ax, name in zip(axes[0], sources):
        counts = stats["by_source"].get(name, {}).get("scores", {})
        ax.bar(range(11), [counts.get(str(i), 0) for i in range(11)], color="#4c72b0")
        if threshold is not None:
            ax.axvline(threshold - 0.5, color="#c44e52", linestyle="--", label=f"threshold {threshold}")
            ax.legend(fontsize=8)
        ax.set_title(name)
        ax.set_xlabel("self-review score")
        ax.set_xticks(range(11))
    axes[0][0].set_ylabel("clips")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)


def finish(out: Path, seconds: float, threshold: int | None) -> dict:
    """Write stats.json and scores.png; return the summary line's object."""
    stats = summarize(out, seconds)
    write_json(out / STATS, stats, ensure_ascii=False)
    plot_scores(stats, out / SCORES_PNG, threshold)
    return {k: stats[k] for k in ("clips", "kept", "rejected", "failed", "seconds")}

