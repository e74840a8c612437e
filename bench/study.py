"""Benchmark of ``live.study analyse`` (issue 21, bound: a study folder costs at most 5 %
more than analysing its recordings one by one with ``live.run``). Prints one JSON object.

    .venv/bin/python bench/study.py [--recordings 3] [--seconds 8] [--repeats 3] [--tiny] [--out FILE]

Two measurements on the same recordings (made with ``live.testclip``, 640x480, 30 fps):

* ``cli``: wall seconds of ``python -m live.study analyse DIR`` against the sum of
  ``python -m live.run FILE --every-window`` over the files (what a researcher would
  otherwise run; each live.run pays its own start-up, so the study is usually faster);
* ``in_process``: the same process analyses the recordings both ways, so start-up is out
  and only the study's own work is compared: ``live.run``'s composition
  (``analyse_source`` + ``SessionLog``) per file against ``StudyRun`` (the same
  ``analyse_source``, plus study-log lines fsynced one by one, the partial-log rename,
  failures file, events). Wall and process CPU seconds (all threads), best of
  ``--repeats`` after one warm-up (the face and VAD models load once per process), the
  two orders alternated. On a shared 2-core machine single runs vary by 30 % and more;
  the best of several is the cost without interference.

``ratio = study / one by one`` (of the bests), ``paired_ratio_*_median`` (the median of
the ratios measured side by side); ``within_bound``: the CLI ratio and the in-process
paired wall ratio <= 1.05. Default analyser:
live.run's default (null: no model, so the front end's own work is all there is and any
overhead of the study shows most); ``--tiny``: a tiny random model (``build_tiny``).
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402  (after the path: run as a script)

BOUND = 1.05  # the bound: a study adds at most 5 %
SIZE = (640, 480)  # px
HOP_S, WINDOW_S = 1.0, 4.0  # live.run's defaults


def make_recordings(folder: Path, n: int, seconds: float) -> list[Path]:
    from live.testclip import make_clip

    folder.mkdir(parents=True)
    first = folder / "r00.mp4"
    make_clip(first, seconds=seconds, size=SIZE, speech=[(1.0, "hello there, how are you today")])
    paths = [first]
    for i in range(1, n):  # the same content: every recording costs the same
        paths.append(folder / f"r{i:02d}.mp4")
        shutil.copy(first, paths[-1])
    return paths


def run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def cli_once(paths: list[Path], work: Path, model: list[str]) -> dict:
    py = [sys.executable, "-m"]
    one = sum(run([*py, "live.run", str(p), "--out", str(work / f"run_{p.stem}"), "--every-window",
                   "--no-progress", *model]) for p in paths)
    study = run([*py, "live.study", "analyse", str(paths[0].parent), "--out", str(work / "study"),
                 "--no-progress", *model])
    for d in work.iterdir():
        shutil.rmtree(d)
    return {"one_by_one_s": one, "study_s": study}


def measure(fn) -> tuple[float, float]:
    c0, w0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def in_process_once(paths: list[Path], work: Path, analyser, study_first: bool) -> dict:
    from live.engine import EngineConfig
    from live.run import analyse_source, make_tracker
    from live.run_log import SessionLog
    from live.sources import FileSource
    from live.study.analyse import StudyRun
    from live.study.recordings import list_recordings

    cfg = EngineConfig(hop_s=HOP_S, window_s=WINDOW_S, every_window=True)
    args = Namespace(face_models=None, plan=None)

    def one_by_one():
        for p in paths:  # as live.run's main: the source opened once to fail fast, then run
            source = FileSource(p)
            source.open()
            source.close()
            with SessionLog(work / f"run_{p.stem}") as slog:
                analyse_source(source, analyser, cfg, make_tracker(args, source), on_frame=slog.frame,
                               on_segment=slog.segment, on_window=slog.window)

    def study():
        out = work / "study"
        out.mkdir()
        StudyRun(out, list_recordings(paths[0].parent), args, cfg, lambda s: analyser).run()

    order = [("study", study), ("one_by_one", one_by_one)]
    res = {}
    for name, fn in (order if study_first else order[::-1]):
        res[f"{name}_wall_s"], res[f"{name}_cpu_s"] = measure(fn)
    for d in work.iterdir():
        shutil.rmtree(d)
    return res


def best(runs: list[dict]) -> dict:
    return {k: round(min(r[k] for r in runs), 3) for k in runs[0]}


def paired(runs: list[dict], kind: str) -> float:
    """The median over repeats of study / one by one measured side by side (each pair
    shares the machine's load at that moment: steadier than a ratio of two bests)."""
    return round(statistics.median(r[f"study_{kind}_s"] / r[f"one_by_one_{kind}_s"] for r in runs), 4)


def ratio(study: float, one: float) -> float:
    return round(study / one, 4)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recordings", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0, help="length of each recording")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tiny", action="store_true", help="analyse with a tiny random model")
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-study-"))
    try:
        paths = make_recordings(tmp / "recordings", a.recordings, a.seconds)
        work = tmp / "work"
        work.mkdir()
        model, analyser = [], None
        if a.tiny:
            from model.checkpoint.loading import build_tiny
            from model.serve.loader import load_analyser

            build_tiny(tmp / "tiny")
            model = ["--model", str(tmp / "tiny"), "--device", "cpu"]
            analyser = load_analyser(str(tmp / "tiny"), device="cpu")
        else:
            from live.worker import NullAnalyser

            analyser = NullAnalyser()
        in_process_once(paths[:1], work, analyser, study_first=True)  # warm-up: models load once, not counted
        runs = [in_process_once(paths, work, analyser, study_first=i % 2 == 0) for i in range(a.repeats)]
        inproc = best(runs)
        cli = best([cli_once(paths, work, model) for _ in range(a.repeats)])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}",
        "analyser": "tiny model (random weights)" if a.tiny else "null (live.run's default)",
        "recordings": a.recordings, "seconds_each": a.seconds, "size": list(SIZE),
        "hop_s": HOP_S, "window_s": WINDOW_S, "repeats": a.repeats,
        "in_process": {**inproc, "ratio_wall": ratio(inproc["study_wall_s"], inproc["one_by_one_wall_s"]),
                       "ratio_cpu": ratio(inproc["study_cpu_s"], inproc["one_by_one_cpu_s"]),
                       "paired_ratio_wall_median": paired(runs, "wall"),
                       "paired_ratio_cpu_median": paired(runs, "cpu"),
                       "paired_ratio_cpu_range": [min(r["study_cpu_s"] / r["one_by_one_cpu_s"] for r in runs),
                                                  max(r["study_cpu_s"] / r["one_by_one_cpu_s"] for r in runs)]},
        "cli": {**cli, "ratio_wall": ratio(cli["study_s"], cli["one_by_one_s"])},
        "bound": BOUND,
    }
    result["in_process"]["paired_ratio_cpu_range"] = [round(x, 3) for x in result["in_process"]["paired_ratio_cpu_range"]]
    result["within_bound"] = (result["in_process"]["paired_ratio_wall_median"] <= BOUND
                              and result["cli"]["ratio_wall"] <= BOUND)
    emit(result, a.out)
    return result


if __name__ == "__main__":
    main()
