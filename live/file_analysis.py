"""A recorded video analysed window by window (the app's File tab, its ``/analyse_file``
API and ``app.py --video``), and the export of window records as JSONL + CSV.

Knows no model: ``holder`` is any ``live.session.ModelServer``.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Callable

from .engine import Engine, EngineConfig, WindowEvent
from .session import ModelServer
from .sources import FileSource
from .files import write_whole
from .study_log import StudyLog, jsonable, write_csv
from .media import HOP_S, WINDOW_S


def analyse_video(path: str | Path, holder: ModelServer, window_s: float = WINDOW_S,
                  hop_s: float = HOP_S, gate: str = "always", study: StudyLog | None = None,
                  progress: Callable[[float], None] | None = None,
                  on_record: Callable[[dict], None] | None = None) -> list[dict]:
    """Every window of a video file, analysed in order (none dropped), as window
    records (``WindowEvent.to_json`` + source, plan) sorted by index.
    ``progress(frac)`` is called as frames are decoded, ``on_record(rec)`` after each
    window is logged to ``study``. Raises SourceError for an unreadable file."""
    source = FileSource(path)
    source.open()  # fail fast with a message naming the file
    duration = source.duration
    source.close()
    records: list[dict] = []

    def on_frame(frame, faces) -> None:
        if progress is not None and duration:
            progress(min(1.0, frame.t / duration))

    def on_window(ev: WindowEvent) -> None:
        rec = ev.to_json(source=str(path), plan=holder.plan)
        records.append(rec)
        if study is not None:
            study.write(rec)
        if on_record is not None:
            on_record(rec)

    cfg = EngineConfig(hop_s=float(hop_s), window_s=float(window_s), gate=gate, every_window=True)
    Engine(source, holder.analyse, cfg, on_frame=on_frame, on_window=on_window).run()
    return sorted(records, key=lambda r: r["index"])


def export_records(records: list[dict], stem: str) -> tuple[str, str]:
    """Write records as JSONL + CSV into a fresh temp folder; (jsonl path, csv path)."""
    out = Path(tempfile.mkdtemp(prefix="omni-emotion-")) / stem
    jsonl = out.with_suffix(".jsonl")
    with write_whole(jsonl, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False, default=jsonable) + "\n" for r in records))
    return str(jsonl), str(write_csv(records, out.with_suffix(".csv")))


def analyse_at_start(holder: ModelServer, video: str, window_s: float, hop_s: float, gate: str,
                     startup: dict, study: StudyLog | None = None) -> None:
    """``app.py --video``: analyse the file once the model is in (run it on a thread);
    log it to ``study`` (the app's --log-session log) when given. ``startup`` gets the
    page's "status" line and, when done, the File tab's "outputs"."""
    from .cli import one_line
    from .render import file_outputs
    from .sources import SourceError
    from .study_log import StudyLogError

    startup["status"] = f"analysing {video} in the background…"
    loading = getattr(holder, "thread", None)
    if loading is not None:
        loading.join()
    try:
        records = analyse_video(video, holder, window_s, hop_s, gate, study=study,
                                on_record=lambda r: print(f"logged window {r['index']}", flush=True))
        startup["outputs"] = file_outputs(records, Path(video).name)
        print(f"analysed {video}: {len(records)} windows", flush=True)
    except (SourceError, OSError, StudyLogError) as e:
        startup["status"] = f"❌ cannot analyse {video}: {one_line(e)}"
        print(f"error: {startup['status']}", file=sys.stderr, flush=True)
