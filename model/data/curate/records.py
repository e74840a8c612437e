"""A curation output folder: its files, crash-safe appends, resume state, stats, plot.

The files (``sre.jsonl``, ``clues.jsonl``, ``rejected.jsonl``, ``failed.jsonl``,
``stats.json``, ``scores.png``, ``run.json``, ``cache/``) and their formats: docs/curation.md.

Crash safety: one process writes a folder (its lock ``.lock``, `claim`). A clip's lines
are appended clues first, then its outcome line (the commit), through
`live.contract.appendfile.AppendFile`. At start a torn trailing line is cut off and
kept in ``<file>.torn``, and clues/failed lines of clips about to be (re)done are
dropped, so a clip never appears twice. Readers of a folder they do not own (``merge``)
change nothing: they ignore a torn tail and settle the records in memory (`settle`).
"""
from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from live.contract.appendfile import AppendFile, OutputLock, OutputLocked, repair_tail
from live.contract.cli import CliError
from live.contract.files import save_figure, write_json, write_whole
from model.data.manifest import iter_jsonl

SRE, CLUES, REJECTED, FAILED = "sre.jsonl", "clues.jsonl", "rejected.jsonl", "failed.jsonl"
STATS, SCORES_PNG, RUN, CACHE = "stats.json", "scores.png", "run.json", "cache"
OUTCOME_FILE = {"kept": SRE, "rejected": REJECTED, "failed": FAILED}
RECORD_FILES = (SRE, CLUES, REJECTED, FAILED)


def read_records(path: Path, torn_ok: bool = False) -> list[dict]:
    """The records of a JSONL file ([] when it does not exist). ``torn_ok``: a last line
    without its newline (a writer killed mid-write, or still writing) is ignored and
    the file is left as it is (readers of folders they do not own: ``merge``, the dry
    run); otherwise it is an error like any bad line."""
    if not path.is_file():
        return []
    return [obj for _, obj in iter_jsonl(path, torn_ok)]


def rewrite(path: Path, rows: Iterable[dict]) -> None:
    """Replace ``path`` whole (temp file, fsync, rename)."""
    with write_whole(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def claim(out: Path) -> OutputLock:
    """``out`` created and locked for this run (``out/.lock`` names the process): one
    writer per curation folder; ``merge`` refuses a folder while it is held.

    Raises:
        CliError: another live process writes ``out`` (named).
    """
    out.mkdir(parents=True, exist_ok=True)
    try:
        return OutputLock(out).acquire()
    except OutputLocked as e:
        raise CliError(f"--out {e}") from None


class Outputs:
    """Appends records to a folder's files, one whole fsynced line at a time
    (`live.contract.appendfile.AppendFile`; thread-safe). The caller holds the folder's lock
    (`claim`)."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self._files: dict[str, AppendFile] = {}
        self._lock = threading.Lock()

    def append(self, name: str, record: dict) -> None:
        with self._lock:
            f = self._files.get(name)
            if f is None:
                f = self._files[name] = AppendFile(self.out / name, lock=False)
        f.append_json(record)

    def close(self) -> None:
        with self._lock:
            for f in self._files.values():
                f.close()
            self._files.clear()


def settle(rows: dict[str, list[dict]], todo_ids: set[str] | None = None) -> dict[str, list[dict]]:
    """A folder's records (``name -> rows``) as a resume would leave them: ``failed``
    lines of clips finished meanwhile or redone now (in ``todo_ids``; None: all) and
    ``clues`` lines without an outcome line (a kill between the two) or repeated are
    dropped. Pure: the caller decides whether to write the result back."""
    done = {r["id"] for name in (SRE, REJECTED) for r in rows[name]}
    failed = [r for r in rows[FAILED] if r["id"] not in done and todo_ids is not None and r["id"] not in todo_ids]
    outcome = done | {r["id"] for r in failed}
    seen: set[str] = set()
    clues = []
    for r in rows[CLUES]:
        if r["id"] in outcome and r["id"] not in seen:
            seen.add(r["id"])
            clues.append(r)
    return {**rows, FAILED: failed, CLUES: clues}


def prepare_resume(out: Path, todo_ids: set[str] | None = None) -> set[str]:
    """Make ``out`` (held by this process: `claim`) consistent after any earlier run (or
    kill) and return the ids already finished (kept or rejected: never redone). A torn
    last line is cut and kept in ``<file>.torn`` (`repair_tail`); lines `settle` drops
    are removed from the files."""
    out = Path(out)
    for name in RECORD_FILES:
        repair_tail(out / name)
    rows = {name: read_records(out / name) for name in RECORD_FILES}
    settled = settle(rows, todo_ids)
    for name in (FAILED, CLUES):
        if len(settled[name]) != len(rows[name]):
            rewrite(out / name, settled[name])
    return {r["id"] for name in (SRE, REJECTED) for r in settled[name]}


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

