"""Benchmark of the analyser pool (issue 14): K simultaneous sessions, each sending the
windows of a real clip (live.testclip: face photo + espeak-ng speech) one at a time, as
the engine's worker does (one window in flight per session), to a local pool
(model.serve.pool) of 1 and 2 replicas with batches of 1 and 4 windows. Prints one JSON
object: per case windows/s, per-window latency (p50, p90, max), and errors.

    .venv/bin/python bench/pool.py [--sessions 4] [--windows 4] [--model tiny|DIR]
                                   [--replicas 1 2] [--batch 1 4] [--replica-cpus 1]
                                   [--replica-gpus 0] [--out FILE]

On a GPU box: ``--model DIR --replica-gpus 1 --replica-cpus 4`` (one GPU per replica).
Each case starts its own pool (start-up not timed) and shuts it down after.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402  (after the path: run as a script)

CLIP_S = 6.0  # s of the benchmark clip
WINDOW_S = 2.0  # s per window (several windows from one short clip)
BATCH_WAIT_S = 0.05  # s a replica waits to fill a batch
TIMEOUT_S = 600.0  # s a session may take before the case counts as hung


def clip_windows(seconds: float) -> list:
    """The windows the engine cuts from a test clip (faces tracked, VAD run)."""
    from live.detector import MediaPipeFaceDetector
    from live.engine import Engine, EngineConfig
    from live.faces import FaceTracker
    from live.devices import open_source
    from live.testclip import make_clip

    path = Path(tempfile.mkdtemp(prefix="bench-pool-")) / "clip.mp4"
    make_clip(path, seconds=seconds)
    got: list = []
    Engine(open_source(str(path)), lambda w: got.append(w) or {},
           EngineConfig(window_s=WINDOW_S, every_window=True),
           tracker=FaceTracker(MediaPipeFaceDetector())).run()
    return got


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def run_case(windows: list, args, replicas: int, batch: int) -> dict:
    from model.serve.pool import PoolConfig, start_pool

    cfg = PoolConfig(model=args.model, device="auto", num_cpus=args.replica_cpus,
                     num_gpus=args.replica_gpus, max_batch_size=batch, batch_wait_s=BATCH_WAIT_S)
    pool = start_pool(f"local:{replicas}", cfg)
    try:
        pool.analyser("warm-up")(windows[0])  # first call pays for routing set-up
        lat: list[list[float]] = [[] for _ in range(args.sessions)]
        errors = [0] * args.sessions

        def session(i: int) -> None:
            a = pool.analyser(f"bench-{i}")
            for k in range(args.windows):
                t0 = time.perf_counter()
                try:
                    a(windows[(i + k) % len(windows)])
                    lat[i].append(time.perf_counter() - t0)
                except Exception:  # counted; the session goes on
                    errors[i] += 1

        threads = [threading.Thread(target=session, args=(i,), daemon=True) for i in range(args.sessions)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT_S)
        wall = time.perf_counter() - t0
        flat = [x for xs in lat for x in xs]
        return {"replicas": replicas, "batch": batch, "windows": len(flat), "errors": sum(errors),
                "hung": any(t.is_alive() for t in threads), "wall_s": round(wall, 2),
                "windows_per_s": round(len(flat) / wall, 3),
                "latency_s": {"p50": round(percentile(flat, 0.5), 3), "p90": round(percentile(flat, 0.9), 3),
                              "max": round(max(flat), 3)} if flat else None}
    finally:
        pool.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=4, help="simultaneous sessions (K)")
    ap.add_argument("--windows", type=int, default=4, help="windows per session")
    ap.add_argument("--model", default="tiny", help="checkpoint folder or tiny")
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--replica-cpus", type=float, default=1.0)
    ap.add_argument("--replica-gpus", type=float, default=0.0)
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    windows = clip_windows(CLIP_S)
    cases = [run_case(windows, args, r, b) for r in args.replicas for b in args.batch]
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "sessions": args.sessions, "windows_per_session": args.windows, "model": args.model,
              "replica_cpus": args.replica_cpus, "replica_gpus": args.replica_gpus, "cases": cases}
    emit(result, args.out)


if __name__ == "__main__":
    main()
