"""A recorded video analysed window by window: the File tab's Analyse button, which is
also the ``/analyse_file`` API endpoint (``wire_file``), and ``app.py --video``; the
records' table, timeline and JSONL + CSV exports (``file_outputs``). The windows go to the caller's
study log when one is on (the tab's own, or the app's ``--log-session`` log, which API
callers share), with the tab's self-report; an upload is deleted once analysed (or refused).

A file must be a video of more than one frame (``check_video``); a window whose
study-log line cannot be written does not stop the analysis, which then ends in
``WindowsNotLogged`` naming those windows: nothing reports success for data it did not
store.

Knows no model: ``holder`` is any ``live.page.session.ModelServer``.
"""
from __future__ import annotations

import errno
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from live.contract.appendfile import WriteFailed, private_dir
from live.contract.cli import one_line
from live.contract.files import write_whole
from live.engine import Engine, EngineConfig, WindowEvent
from live.page.guard import check_settings, guard, user_error
from live.page.hosting import discard_upload, release_memory
from live.page.render import TABLE_COLUMNS, timeline_figure
from live.page.session import ModelServer
from live.sources import FileSource, SourceError
from live.study_log import StudyLog, StudyLogError, jsonable, new_run_id, short, write_csv
from live.contract.media import HOP_S, WINDOW_S

PICTURE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe")  # still pictures
NO_SELF_REPORT = {"self_report": None, "self_report_at": None}  # a file analysed without one


class WindowsNotLogged(WriteFailed):
    """Windows of an analysis whose study-log lines could not be written."""


def check_video(path: str | Path, name: str | None = None) -> None:
    """SourceError (naming ``name``, default the path) unless ``path`` holds a video of
    more than one frame: a picture renamed ``.mp4`` opens as a one-frame "video"."""
    import av

    name = name or str(path)
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise SourceError(f"{name}: no video stream in it")
            if any(f in PICTURE_FORMATS for f in c.format.name.split(",")):
                raise SourceError(f"{name} is a picture ({c.format.name}), not a video")
            frames = 0
            for packet in c.demux(c.streams.video[0]):
                frames += packet.size > 0
                if frames > 1:
                    return
    except (av.FFmpegError, OSError, ValueError) as e:
        raise SourceError(f"{name} is not a media file, or is damaged ({type(e).__name__})") from None
    raise SourceError(f"{name} holds a single frame, not a video")


def analyse_video(path: str | Path, holder: ModelServer, window_s: float = WINDOW_S,
                  hop_s: float = HOP_S, gate: str = "always", study: StudyLog | None = None,
                  progress: Callable[[float], None] | None = None,
                  on_record: Callable[[dict], None] | None = None, fields: dict | None = None,
                  name: str | None = None) -> list[dict]:
    """Every window of a video file, analysed in order (none dropped), as window
    records (``WindowEvent.to_json`` + run, source, plan and ``fields``, by default no
    self-report) sorted by index; the analysis is one run (``new_run_id``).
    ``progress(frac)`` is called as frames are decoded, ``on_record(rec)`` after each
    window is logged to ``study``. ``name``: what messages call the file (the page
    passes the upload's own name, not the server's temporary path). Raises
    SourceError for an unreadable file or one that is not a video, and
    WindowsNotLogged when some windows' lines could not be written to ``study``."""
    name = name or str(path)
    check_video(path, name)
    source = FileSource(path)
    try:
        source.open()  # fail fast with a message naming the file
    except SourceError as e:
        raise SourceError(str(e).replace(str(path), name)) from None
    duration = source.duration
    source.close()
    records: list[dict] = []
    failed: list[tuple[int, BaseException]] = []  # (window index, why its line was not written)
    run, extra = new_run_id(), {**NO_SELF_REPORT, **(fields or {})}

    def on_frame(frame, faces) -> None:
        if progress is not None and duration:
            progress(min(1.0, frame.t / duration))

    def on_window(ev: WindowEvent) -> None:
        rec = {**ev.to_json(run=run, source=str(path), plan=holder.plan), **extra}
        records.append(rec)
        if study is not None:
            try:
                study.write(rec)
            except (OSError, StudyLogError) as e:  # a full disk: said at the end, for every window
                failed.append((rec["index"], e))
                return
        if on_record is not None:
            on_record(rec)

    cfg = EngineConfig(hop_s=float(hop_s), window_s=float(window_s), gate=gate, every_window=True)
    Engine(source, holder.analyse, cfg, on_frame=on_frame, on_window=on_window).run()
    if failed:
        idx = ", ".join(str(i) for i, _ in sorted(failed, key=lambda f: f[0]))
        first = failed[0][1]
        raise WindowsNotLogged(getattr(first, "errno", None) or errno.EIO,
                               f"{len(failed)} of {len(records)} windows of {name} were analysed but NOT "
                               f"stored in the study log (windows {idx}): {first}")
    return sorted(records, key=lambda r: r["index"])


def file_outputs(records: list[dict], name: str, export_dir: str | Path):
    """(status, table rows, timeline, jsonl path, csv path) for the File tab; the
    exports are written into ``export_dir`` (``export_records``)."""
    rows = [[r[c] if not isinstance(r[c], list) else ", ".join(r[c]) for c in TABLE_COLUMNS]
            for r in records]
    n = sum(r["analysed"] for r in records)
    jsonl, csv_path = export_records(records, Path(name).stem or "video", export_dir)
    status = f"**{name}**: {len(records)} windows, {n} analysed."
    return status, rows, timeline_figure(records, f"{name}: labels over time"), jsonl, csv_path


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


def analyse_at_start(holder: ModelServer, video: str, window_s: float, hop_s: float, gate: str,
                     startup: dict, study: StudyLog | None = None, export_dir: str | Path = "sessions/exports",
                     fields: dict | None = None) -> None:
    """``app.py --video``: analyse the file once the model is in (run it on a thread);
    log it to ``study`` (the app's --log-session log) when given, printing "logged
    window N" once each line is on disk. ``startup`` gets the page's "status" line and,
    when done, the File tab's "outputs" (exports under ``export_dir``)."""
    startup["status"] = f"analysing {video} in the background…"
    loading = getattr(holder, "thread", None)
    if loading is not None:
        loading.join()
    try:
        said = (lambda r: print(f"logged window {r['index']}", flush=True)) if study is not None else None
        records = analyse_video(video, holder, window_s, hop_s, gate, study=study, on_record=said,
                                fields=fields)
        startup["outputs"] = file_outputs(records, Path(video).name, export_dir)
        print(f"analysed {video}: {len(records)} windows", flush=True)
    except (SourceError, OSError, StudyLogError) as e:
        startup["status"] = f"❌ cannot analyse {video}: {one_line(e)}"
        print(f"error: {startup['status']}", file=sys.stderr, flush=True)


def wire_file(f: dict, live: dict, session, holder, export_dir: Path) -> None:
    """``f``: the File tab's components, ``live``: the Live tab's (its window, hop and
    gate settings apply); exports go under ``export_dir``."""
    import gradio as gr

    def analyse_file(path, window_s, hop_s, gate_policy, s, progress=gr.Progress()):
        """Analyse a video file window by window → status, table, timeline, JSONL, CSV."""
        if s.view.participant_view:
            raise user_error("A participant's page does not analyse files.")
        name = Path(path).name if isinstance(path, str) and path else "the upload"
        try:
            _check_upload(path, name)
            check_settings(window_s, hop_s, gate_policy)
            progress(0.0, desc="decoding + analysing")
            records = analyse_video(path, holder, window_s, hop_s, gate_policy, study=s.study.log,
                                    progress=lambda frac: progress(frac, desc="analysing"),
                                    fields=s.study.fields(), name=name)
            return file_outputs(records, name, export_dir)
        except SourceError as e:
            raise user_error(f"Cannot analyse this upload: {one_line(e)}", stay=True) from None  # e names the file
        except (OSError, StudyLogError) as e:  # WindowsNotLogged names the windows not stored
            raise user_error(f"{name}: {one_line(e)}" if isinstance(e, (WindowsNotLogged, StudyLogError))
                             else f"The results of {name} could not be stored: {one_line(e)}", stay=True) from None
        finally:
            discard_upload(path if isinstance(path, str) else None)  # refused ones too
            release_memory()

    f["go"].click(guard(analyse_file), [f["video"], live["win"], live["hop"], live["gate"], session],
                  f["outputs"], api_name="analyse_file")


def _check_upload(path, name: str) -> None:
    """user_error unless ``path`` is an upload still on the server (``name``: the
    upload's own name, which Gradio keeps, never the server's temp path)."""
    if not path:
        raise user_error("Upload a video file first.")
    if not isinstance(path, str):
        raise user_error(f"the video must be an uploaded file, got {short(path)}")
    if not Path(path).is_file():
        raise user_error(f"{name} is no longer on the server (uploads are deleted once "
                         "analysed): upload it again.", stay=True)
