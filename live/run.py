"""Command line: run the live front end on a file, a webcam or a microphone.

    python -m live.run SOURCE --out DIR [--realtime] [--analyser null|fake]
                              [--model DIR [--plan NAME]] [...]

SOURCE: a file path, ``webcam[:N]`` or ``mic[:DEVICE]``. Writes DIR/frames.jsonl,
speech.jsonl, windows.jsonl (with events or markers also markers.jsonl, through
``live.run_events``; a non-empty DIR is refused unless ``--overwrite``) and prints, last,
one JSON line of stats; formats and options: docs/live.md.

This is a composition root: with ``--model`` it reaches up to ``model.serve.analyser``
(lazily, only then), which ``live/`` as a library never does.

Errors: the ``live.contract.cli`` convention (inputs checked before a model loads; a
decode error mid-file names the file and the media time).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from live.worker import FAKE_DELAY_S, Analyser, FakeAnalyser, NullAnalyser
from live.contract.cli import (DEVICE_DEFAULT, DEVICE_HELP, EXIT_INTERRUPTED, EXIT_OK, CliError, check_out, one_line,
                               resolve_device, run_main)
from live.face_models import ENV_MODELS, FaceModelError
from live.lsl import LSLError
from live.contract.media import HOP_S, WINDOW_S, check_window
from live.run_events import RunEvents
from live.devices import open_source
from live.sources import FileSource, SourceError
from live.window import GATES


def add_analysis_options(p: argparse.ArgumentParser) -> None:
    """The options of how a source is analysed, shared by ``live.run`` and
    ``live.study analyse`` (one definition: the same flags mean the same there)."""
    p.add_argument("--analyser", choices=("null", "fake"), default="null")
    p.add_argument("--fake-delay", type=float, default=FAKE_DELAY_S, help="s per window (fake)")
    p.add_argument("--model", help="Omni-Emotion model folder: use it as the analyser")
    p.add_argument("--plan", help="precision plan for --model (see quant/)")
    p.add_argument("--device", default=DEVICE_DEFAULT, help=f"device for --model: {DEVICE_HELP}")
    p.add_argument("--pool", metavar="ADDRESS|local:N",
                   help="analyse on a pool of --model replicas (model.serve.pool, docs/serving.md): "
                        "local:N starts N here, HOST:PORT joins a Ray cluster")
    p.add_argument("--pool-batch", type=int,
                   help="windows per batch on the pool (default: model.serve.pool.MAX_BATCH_SIZE)")
    p.add_argument("--hop", type=float, default=HOP_S, help="s between windows")
    p.add_argument("--window", type=float, default=WINDOW_S, help="s per window")
    p.add_argument("--gate", choices=GATES, default="always", help="which windows to analyse")
    p.add_argument("--face-models", help=f"folder with the BlazeFace .tflite files (or ${ENV_MODELS})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m live.run", description=__doc__.split("\n\n")[0])
    p.add_argument("source", help="video file, webcam[:N] or mic[:DEVICE]")
    p.add_argument("--out", required=True, help="folder for the JSONL logs")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an --out folder that is not empty (refused otherwise)")
    p.add_argument("--realtime", action="store_true", help="pace a file in real time")
    add_analysis_options(p)
    p.add_argument("--every-window", action="store_true",
                   help="files read as fast as possible: wait for the analyser, drop nothing")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--events", metavar="CSV",
                   help="the file's events table: columns time_s,event[,condition] (docs/study.md)")
    p.add_argument("--markers", metavar="lsl:NAME",
                   help="event markers from the LSL stream NAME (a live source or --realtime)")
    p.add_argument("--lsl-out", metavar="NAME",
                   help="publish analysed windows as LSL streams NAME (JSON) and NAME-values")
    return p


def make_pool_analyser(args) -> Analyser:
    """The --pool analyser (the pool is kept in ``args.pool_handle`` to close it)."""
    from model.serve.loader import PLAN_LOADER
    from model.serve.pool import PoolConfig, parse_spec, start_pool

    parse_spec(args.pool)  # a bad spec is a usage error before anything starts
    if not args.model:
        raise CliError("--pool needs --model DIR (what the replicas load)")
    cfg = PoolConfig(model=args.model, plan=args.plan, loader=PLAN_LOADER if args.plan else None,
                     device=args.device,
                     **({} if args.pool_batch is None else {"max_batch_size": args.pool_batch}))
    try:
        args.pool_handle = start_pool(args.pool, cfg)
    except RuntimeError as e:  # the replicas did not start (their model does not load)
        raise CliError(f"--pool {args.pool}: the replicas did not start: {e}") from None
    return args.pool_handle.analyser()


def make_analyser(args) -> Analyser:
    if args.plan and not args.model:
        raise CliError("--plan needs --model")
    if args.pool:
        return make_pool_analyser(args)
    if args.model:
        if not os.path.isdir(args.model):
            raise CliError(f"model folder not found: {args.model}")
        try:
            from model.serve.loader import load_analyser
        except ImportError as e:
            raise CliError(f"--model needs the model package (model.serve.loader): {e}") from None
        loader = None
        if args.plan:  # composition root: the only place live/ reaches quant/
            try:
                from quant import load_model as loader
            except ImportError as e:
                raise CliError(f"--plan needs the quant package: {e}") from None
        try:
            return load_analyser(args.model, args.plan, resolve_device(args.device), loader)
        except (ValueError, OSError) as e:
            raise CliError(f"cannot load model {args.model}: {e}") from None
    if args.analyser == "fake":
        return FakeAnalyser(delay_s=args.fake_delay)
    return NullAnalyser()


def engine_config(args, every_window: bool):
    """The engine's settings from the analysis options (ValueError naming a bad one)."""
    from live.engine import EngineConfig

    check_window(args.window, args.hop, names=("--window", "--hop"))
    return EngineConfig(hop_s=args.hop, window_s=args.window, gate=args.gate, every_window=every_window)


def make_tracker(args, source):
    """The face tracker for ``source`` (None without video); FaceModelError when the
    face models are missing."""
    from live.detector import MediaPipeFaceDetector
    from live.faces import FaceTracker

    return FaceTracker(MediaPipeFaceDetector(args.face_models)) if source.has_video else None


def analyse_source(source, analyser: Analyser, cfg, tracker, on_frame=None, on_segment=None,
                   on_window=None, markers=None, on_start=None, progress: bool = False):
    """The one analysis of a source, ``live.run``'s and ``live.study analyse``'s: the
    engine run to the end; returns the ``Engine`` (its ``stats()``, ``interrupted``).
    ``markers``: the run's ``live.markers.MarkerTimeline`` (or None); ``on_start(engine)``
    is called just before it runs (e.g. to start an LSL inlet on its clock)."""
    from live.engine import Engine

    engine = Engine(source, analyser, cfg, tracker=tracker, on_frame=on_frame,
                    on_segment=on_segment, on_window=on_window, markers=markers)
    if on_start is not None:
        on_start(engine)
    engine.run(progress=progress)
    return engine


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_main(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from live.run_log import SessionLog

    # 1. everything that can be wrong with the arguments and inputs, before any work
    try:
        cfg = engine_config(args, args.every_window)
        source = open_source(args.source, realtime=args.realtime)
        source.open()  # fail fast, before loading models; Engine.run reopens
        source.close()
        events = RunEvents(args.events, args.markers, args.lsl_out, live=source.live,
                           paced_file=args.realtime and isinstance(source, FileSource))
        out = check_out(args.out, args.overwrite)
        analyser = make_analyser(args)
        tracker = make_tracker(args, source)
    except (SourceError, FaceModelError, ValueError, LSLError) as e:  # bad input: usage (exit 2)
        raise CliError(one_line(e)) from None
    # 2. the work: a failure now (a decode error mid-file) is a runtime error (run_main: exit 1)
    try:
        with SessionLog(out) as slog:
            engine = analyse_source(source, analyser, cfg, tracker, on_frame=slog.frame,
                                    on_segment=slog.segment,
                                    on_window=lambda ev: events.window(slog.window(ev)),
                                    markers=events.timeline,
                                    on_start=lambda eng: events.start(out, eng.clock),
                                    progress=not args.no_progress and not args.realtime
                                    and sys.stderr.isatty())
    finally:
        events.close()
        if getattr(args, "pool_handle", None) is not None:
            args.pool_handle.close()
    print(json.dumps(engine.stats()), flush=True)
    return EXIT_INTERRUPTED if engine.interrupted else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
