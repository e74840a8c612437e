"""Command line of ``live.study`` (see ``live/study/__init__.py`` and docs/study.md).

Errors: the ``live.contract.cli`` convention (``analyse`` exits 1 when some recordings
failed: they are in failures.jsonl). Each command prints one JSON line last.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace

from live.contract.appendfile import OutputLock, OutputLocked, private_dir
from live.contract.cli import EXIT_OK, EXIT_RUNTIME, CliError, check_out, run_main
from live.face_models import FaceModelError
from live.contract.files import write_whole
from live.study_log import StudyLogError

from . import FAILURES, STUDY_JSON, study_logs

OPTIONS_KEPT = ("analyser", "fake_delay", "model", "plan", "hop", "window", "gate")  # in study.json


def build_parser() -> argparse.ArgumentParser:
    from live.run import add_analysis_options

    p = argparse.ArgumentParser(prog="python -m live.study", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("analyse", help="analyse every recording of a study folder")
    a.add_argument("study_dir", help="folder of recordings (one file per session)")
    a.add_argument("--out", required=True, help="the analysed study folder (one study log per recording)")
    a.add_argument("--participants", help="CSV: recording,participant[,consent]")
    a.add_argument("--events-dir", help="folder of events tables <stem>.csv (time_s,event[,condition])")
    a.add_argument("--resume", action="store_true", help="continue an --out analysed before (kill, crash)")
    a.add_argument("--overwrite", action="store_true",
                   help="analyse every recording again, each log replaced when its new one is complete")
    a.add_argument("--jobs", type=int, help="recordings at once over --pool (default: its replica count)")
    a.add_argument("--no-progress", action="store_true")
    add_analysis_options(a)
    r = sub.add_parser("report", help="windows.csv, summary.csv and report.html of an analysed study")
    r.add_argument("out", help="an analysed study folder (or the app's --log-dir)")
    w = sub.add_parser("withdraw", help="purge a participant's data (live.study_log.withdraw)")
    w.add_argument("out")
    w.add_argument("--participant", required=True)
    w.add_argument("--records", action="store_true", help="delete the records too, not only media")
    w.add_argument("--reason", default="", help="said in the audit line")
    e = sub.add_parser("export", help="the study's CSVs for sharing")
    e.add_argument("out")
    e.add_argument("--out", dest="export", required=True, help="folder to write the CSVs into")
    e.add_argument("--pseudonymise", action="store_true", help="participant ids → keyed hashes")
    e.add_argument("--overwrite", action="store_true")
    return p


def study_folder(out: str, failures_enough: bool = False) -> Path:
    """An existing study folder with at least one study log (or, ``failures_enough``,
    a failures file: a study whose every recording failed is still reported)."""
    path = Path(out)
    if not path.is_dir():
        raise CliError(f"{out} is not a folder: give the --out of `live.study analyse` (or a --log-dir)")
    if not study_logs(path) and not (failures_enough and (path / FAILURES).is_file()):
        raise CliError(f"{out} holds no study log (<session>.jsonl): analyse the study first")
    return path


def _jobs(args) -> int:
    if args.jobs is not None and args.jobs < 1:
        raise CliError(f"--jobs {args.jobs}: give a number >= 1")
    if not args.pool:
        if args.jobs not in (None, 1):
            raise CliError("--jobs above 1 needs --pool (one analyser runs one window at a time)")
        return 1
    from model.serve.pool import parse_spec

    n = parse_spec(args.pool)[1]
    return args.jobs or n or 1


def _check_options(out: Path, options: dict, study_dir: Path) -> None:
    """A resumed study goes on with the options it was started with."""
    path = out / STUDY_JSON
    if not path.is_file():
        return
    before = json.loads(path.read_text(encoding="utf-8"))
    if before.get("options") != options or before.get("study_dir") != str(study_dir.resolve()):
        raise CliError(f"--resume: {out} was analysed from {before.get('study_dir')} with "
                       f"{before.get('options')}; resume with the same, or choose a new --out")


def analyse(args) -> int:
    from live.run import engine_config, make_analyser, make_tracker

    from .analyse import StudyRun
    from .recordings import list_recordings

    recs = list_recordings(args.study_dir, args.participants, args.events_dir)
    out = check_out(args.out, args.overwrite, resume=args.resume)
    try:
        cfg = engine_config(args, every_window=True)  # a study analyses every window
    except ValueError as e:
        raise CliError(str(e)) from None
    jobs = _jobs(args)
    options = {k: getattr(args, k) for k in OPTIONS_KEPT}
    if not args.overwrite:
        _check_options(out, options, Path(args.study_dir))
    make_tracker(args, SimpleNamespace(has_video=True))  # the face models, before any work
    with ExitStack() as stack:
        private_dir(out)
        stack.enter_context(OutputLock(out))  # one analysis per study folder
        manifest = {"study_dir": str(Path(args.study_dir).resolve()), "options": options,
                    "recordings": {r.session: {"file": r.path.name, "participant": r.participant,
                                               "consent": r.consent} for r in recs}}
        with write_whole(out / STUDY_JSON, "w", private=True, encoding="utf-8") as f:
            f.write(json.dumps(manifest, indent=1) + "\n")
        analyser = make_analyser(args)
        pool = getattr(args, "pool_handle", None)
        if pool is not None:
            stack.callback(pool.close)
        run = StudyRun(out, recs, args, cfg,
                       (lambda s: pool.analyser(stream_id=s)) if pool is not None else (lambda s: analyser),
                       jobs=jobs, progress=not args.no_progress and sys.stderr.isatty(), redo=args.overwrite)
        counts = run.run()
    print(json.dumps(counts), flush=True)
    if counts["failed"]:
        print(f"error: {counts['failed']} of {counts['recordings']} recordings could not be analysed: "
              f"see {out / 'failures.jsonl'}", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK


def report(args) -> int:
    from .report import write_report

    out = study_folder(args.out, failures_enough=True)
    with OutputLock(out):  # not while an analysis writes the folder
        print(json.dumps(write_report(out)), flush=True)
    return EXIT_OK


def export(args) -> int:
    from .export import export_tables

    out = study_folder(args.out)
    export_dir = check_out(args.export, args.overwrite)
    if export_dir.resolve() == out.resolve() or out.resolve() in export_dir.resolve().parents:
        raise CliError(f"--out {args.export} is inside the study folder: an export goes elsewhere")
    with OutputLock(out):
        print(json.dumps(export_tables(out, export_dir, args.pseudonymise)), flush=True)
    return EXIT_OK


def withdraw(args) -> int:
    """``live.study_log.withdraw`` on the study folder (the one purge rule, its audit
    line); with ``--records`` the study's tables and report are made again without the
    participant (or removed when no log is left)."""
    from live.study_log import withdraw as purge

    from . import REPORT_HTML, SUMMARY_CSV, WINDOWS_CSV
    from .report import write_report

    out = study_folder(args.out, failures_enough=True)
    with OutputLock(out):
        entry = purge(out, args.participant, records=args.records, reason=args.reason)
        tables = [out / n for n in (WINDOWS_CSV, SUMMARY_CSV, REPORT_HTML)]
        if args.records and any(p.exists() for p in tables):
            if study_logs(out):
                write_report(out)
            else:
                for p in tables:
                    p.unlink(missing_ok=True)
    originals = _original_recordings(out, entry["participant"])
    if originals:
        print(f"note: the original recordings of {entry['participant']} are not deleted by this "
              f"command (they are the study's source files): {', '.join(originals)}", file=sys.stderr)
    print(json.dumps({**entry, "original_recordings": originals}), flush=True)
    return EXIT_OK


def _original_recordings(out: Path, participant: str) -> list[str]:
    """The participant's recordings in STUDY_DIR that still exist (from study.json)."""
    path = out / STUDY_JSON
    if not path.is_file():
        return []
    study = json.loads(path.read_text(encoding="utf-8"))
    files = [Path(study["study_dir"]) / r["file"] for r in study.get("recordings", {}).values()
             if r.get("participant") == participant]
    return [str(f) for f in files if f.exists()]


COMMANDS = {"analyse": analyse, "report": report, "export": export, "withdraw": withdraw}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_main(lambda: COMMANDS[args.command](args), usage=(FaceModelError, OutputLocked, StudyLogError))


if __name__ == "__main__":
    sys.exit(main())
