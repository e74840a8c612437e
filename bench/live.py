"""Benchmark of the live front end (issue 3): CPU-seconds per media second for
decode + VAD + faces + windows on a 640x480, 30 fps clip, and the per-window
overhead around a slow (fake) analyser. Prints one JSON object.

    .venv/bin/python bench/live.py [--seconds 30] [--realtime-seconds 8] [--out FILE]

Measured with time.process_time() (all threads of the process), after the models
are loaded; the clip is made with live.testclip (real face photo + espeak-ng).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPEECH = [  # (start s, text), repeated every 10 s of the clip
    (1.0, "hello there, how are you today"),
    (5.0, "I am really happy to see you again"),
]


def make_media(path: Path, seconds: float) -> dict:
    from live.testclip import make_clip

    speech = [(k * 10.0 + s, txt) for k in range(int(seconds // 10) + 1) for s, txt in SPEECH
              if k * 10.0 + s < seconds - 2.5]
    return make_clip(path, seconds=seconds, fps=30, size=(640, 480), speech=speech)


def cpu_of(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - c0, time.perf_counter() - w0, out


def bench_parts(path: Path, seconds: float) -> dict:
    """Each stage alone, so the total can be explained."""
    import av
    import numpy as np

    from live.faces import FaceTracker
    from live.frames import VideoFrame
    from live.resample import Resampler
    from live.vad import VADGate

    def decode():
        frames, audio, res = [], [], Resampler()
        with av.open(str(path)) as c:
            for pkt in c.demux():
                for f in pkt.decode():
                    if pkt.stream.type == "video":
                        frames.append(VideoFrame(float(f.time), f))
                    else:
                        audio.append(res(f))
        return frames, np.concatenate(audio)

    c_dec, _, (frames, audio) = cpu_of(decode)
    gate = VADGate()
    gate.prob  # load
    gate(audio[:16000], t=0.0)  # JIT warm-up
    gate.reset()
    c_vad, _, _ = cpu_of(lambda: (gate(audio, t=0.0), gate.flush()))
    tracker = FaceTracker()
    tracker.detector
    c_face, _, _ = cpu_of(lambda: tracker.track(frames))
    return {
        "decode_cpu_s_per_media_s": round(c_dec / seconds, 4),
        "decode_ms_per_frame": round(1000 * c_dec / len(frames), 3),
        "vad_cpu_s_per_media_s": round(c_vad / seconds, 4),
        "faces_cpu_s_per_media_s": round(c_face / seconds, 4),
        "face_detections_per_s": round(tracker.detections_run / seconds, 2),
        "detector_model_runs": dict(tracker.detector.calls),
        "face_ms_per_detection": round(1000 * c_face / max(1, tracker.detections_run), 2),
    }


def bench_engine(path: Path, realtime: bool, analyser) -> dict:
    from live.engine import Engine
    from live.sources import FileSource

    events = []
    eng = Engine(FileSource(path, realtime=realtime), analyser, on_window=events.append)
    eng.vad.prob, eng.tracker.detector  # load models before the clock starts
    stats = eng.run()
    queue = [e.queue_s for e in events if e.analysed]
    stats.update(
        window_build_ms=round(1000 * eng.window_cpu_s / max(1, eng.n_windows), 2),
        analysed_windows=sum(e.analysed for e in events),
        mean_queue_ms=round(1000 * sum(queue) / len(queue), 2) if queue else None,
        max_queue_ms=round(1000 * max(queue), 2) if queue else None,
        skipped_frames=eng.skipped_frames,
    )
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="clip length for the CPU test")
    ap.add_argument("--realtime-seconds", type=float, default=8.0,
                    help="clip length for the real-time fake-analyser test (0 to skip)")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()

    from live.analyser import FakeAnalyser, NullAnalyser

    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "bench.mp4"
        make_media(clip, args.seconds)
        result = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
            "clip": {"seconds": args.seconds, "size": [640, 480], "fps": 30},
            "target_cpu_s_per_media_s": 0.06,
        }
        result["fast_null"] = bench_engine(clip, realtime=False, analyser=NullAnalyser())
        result["parts"] = bench_parts(clip, args.seconds)
        if args.realtime_seconds > 0:
            rt = Path(tmp) / "rt.mp4"
            make_media(rt, args.realtime_seconds)
            r = bench_engine(rt, realtime=True, analyser=FakeAnalyser(0.5))
            # The fake analyser sleeps (no CPU); its own wall time is not overhead.
            r["overhead_ms_per_window"] = round(r["window_build_ms"] + (r["mean_queue_ms"] or 0.0), 2)
            result["realtime_fake"] = r
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
