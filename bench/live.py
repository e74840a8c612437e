"""Benchmark of the live front end (issues 3 and 12): CPU-seconds per media second for
decode + VAD + faces + windows on a 640x480, 30 fps clip, against decoding the same
clip alone in the same run (the ratio is the target: <= 2), with face coverage and VAD
edges against the clip's truth, silero's ONNX vs JIT VAD model, and the per-window
overhead around a slow (fake) analyser. Prints one JSON object.

    .venv/bin/python bench/live.py [--seconds 30] [--realtime-seconds 8] [--out FILE]
    .venv/bin/python bench/live.py --rss [--rss-seconds 12]   # peak RSS, 4K vs 640x480

Measured with time.process_time() (all threads of the process), after the models
are loaded; the clip is made with live.testclip (real face photo + espeak-ng).
``--rss`` runs ``python -m live.run CLIP --out DIR`` (no model) as a subprocess on a
3840x2160 and a 640x480 clip of the same content and reports each one's peak RSS
(``os.wait4``'s ru_maxrss) and their ratio (the target: <= 1.3).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import emit  # noqa: E402  (after the path: run as a script)

SPEECH = [  # (start s, text), repeated every 10 s of the clip
    (1.0, "hello there, how are you today"),
    (5.0, "I am really happy to see you again"),
]


SIZE = (640, 480)  # px: the benchmark clip
UHD = (3840, 2160)  # px: the large clip of --rss
FACE_SIDE = 200  # px: face photo side at 640x480 (live.testclip's default), scaled with the clip


def make_media(path: Path, seconds: float, size: tuple[int, int] = SIZE) -> dict:
    from live.testclip import make_clip

    speech = [(k * 10.0 + s, txt) for k in range(int(seconds // 10) + 1) for s, txt in SPEECH
              if k * 10.0 + s < seconds - 2.5]
    return make_clip(path, seconds=seconds, fps=30, size=size, speech=speech,
                     face_scale=FACE_SIDE * size[1] // SIZE[1])


def cpu_of(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - c0, time.perf_counter() - w0, out


def decode_only(path: Path):
    """The floor: PyAV decodes every frame to an RGB array, and the audio to 16 kHz."""
    import av
    import numpy as np

    from live.resample import Resampler

    n, audio, res = 0, [], Resampler()
    with av.open(str(path)) as c:
        for pkt in c.demux():
            for f in pkt.decode():
                if pkt.stream.type == "video":
                    f.to_ndarray(format="rgb24")
                    n += 1
                else:
                    audio.append(res(f))
    audio.append(res.flush())
    return n, np.concatenate(audio)


def bench_parts(path: Path, seconds: float) -> dict:
    """Each stage alone, so the total can be explained."""
    import av

    from live.faces import FaceTracker
    from live.frames import VideoFrame
    from bench.silero_jit import SileroSpeechProb
    from live.vad import SileroOnnxProb, VADGate

    def decode():  # as the engine decodes: frames kept as decoded (RGB on demand)
        with av.open(str(path)) as c:
            return [VideoFrame(float(f.time), f) for f in c.decode(video=0)]

    c_dec, _, frames = cpu_of(decode)
    _, audio = decode_only(path)
    vad = {}
    for name, prob in (("onnx", SileroOnnxProb()), ("jit", SileroSpeechProb())):
        prob.warm_up()
        gate = VADGate(prob)
        c_vad, _, segs = cpu_of(lambda: gate(audio, t=0.0) + gate.flush())
        vad[name] = (c_vad, [(round(x.start, 3), round(x.end, 3)) for x in segs])
    tracker = FaceTracker()
    tracker.detector
    c_face, _, _ = cpu_of(lambda: tracker.track(frames))
    return {
        "decode_yuv_cpu_s_per_media_s": round(c_dec / seconds, 4),
        "decode_ms_per_frame": round(1000 * c_dec / len(frames), 3),
        "vad_onnx_cpu_s_per_media_s": round(vad["onnx"][0] / seconds, 4),
        "vad_jit_cpu_s_per_media_s": round(vad["jit"][0] / seconds, 4),
        "vad_onnx_same_segments_as_jit": vad["onnx"][1] == vad["jit"][1],
        "faces_cpu_s_per_media_s": round(c_face / seconds, 4),
        "face_detections_per_s": round(tracker.detections_run / seconds, 2),
        "detector_model_runs": dict(tracker.detector.calls),
        "face_ms_per_detection": round(1000 * c_face / max(1, tracker.detections_run), 2),
    }


def quality(truth: dict, frames: list, segments: list) -> dict:
    """Face coverage (frames with a face where the clip has one) and VAD edges (the
    largest distance of a detected speech edge from the clip's audible edge)."""
    has = set(truth["face_boxes"])
    found = sum(1 for i, f in enumerate(frames) if i in has and f.faces)
    edges = [max(abs(s.start - a), abs(s.end - b)) for s, (a, b) in zip(segments, truth["speech"])]
    return {
        "face_coverage": round(found / max(1, len(has)), 4),
        "speech_segments": [len(segments), len(truth["speech"])],
        "vad_max_edge_error_s": round(max(edges), 3) if edges else None,
    }


def bench_engine(path: Path, realtime: bool, analyser, truth: dict | None = None) -> dict:
    from live.engine import Engine
    from live.sources import FileSource

    events, frames, segments = [], [], []
    eng = Engine(FileSource(path, realtime=realtime), analyser, on_window=events.append,
                 on_frame=lambda f, faces: frames.append(f), on_segment=segments.append)
    eng.vad.prob, eng.tracker.detector  # load models before the clock starts
    stats = eng.run()
    if truth is not None:
        stats.update(quality(truth, frames, segments))
    queue = [e.queue_s for e in events if e.analysed]
    stats.update(
        window_build_ms=round(1000 * eng.window_cpu_s / max(1, eng.n_windows), 2),
        analysed_windows=sum(e.analysed for e in events),
        mean_queue_ms=round(1000 * sum(queue) / len(queue), 2) if queue else None,
        max_queue_ms=round(1000 * max(queue), 2) if queue else None,
        skipped_frames=eng.skipped_frames,
    )
    return stats


def peak_rss_mb(clip: Path, out: Path) -> float:
    """Peak RSS (MB) of ``python -m live.run CLIP --out OUT`` (no model), from wait4."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "live.run", str(clip), "--out", str(out),
                             "--no-progress"], cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"live.run failed on {clip} (exit {proc.returncode})")
    return usage.ru_maxrss / 1024  # Linux: KB


def bench_rss(tmp: Path, seconds: float) -> dict:
    sizes = {"uhd": UHD, "vga": SIZE}
    mb = {}
    for name, size in sizes.items():
        clip = tmp / f"{name}.mp4"
        make_media(clip, seconds, size)
        mb[name] = peak_rss_mb(clip, tmp / f"out-{name}")
    return {
        "clip_seconds": seconds,
        "peak_rss_mb_3840x2160": round(mb["uhd"], 1),
        "peak_rss_mb_640x480": round(mb["vga"], 1),
        "ratio": round(mb["uhd"] / mb["vga"], 3),
        "target_ratio": 1.3,
    }


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), platform.processor())
    return f"{model}, {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="clip length for the CPU test")
    ap.add_argument("--realtime-seconds", type=float, default=8.0,
                    help="clip length for the real-time fake-analyser test (0 to skip)")
    ap.add_argument("--rss", action="store_true",
                    help="instead: peak RSS of live.run on a 3840x2160 vs a 640x480 clip")
    ap.add_argument("--rss-seconds", type=float, default=12.0, help="clip length for --rss")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()

    from live.worker import FakeAnalyser, NullAnalyser

    result = {"machine": machine(), "load_avg_1m": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as tmp:
        if args.rss:
            result["rss"] = bench_rss(Path(tmp), args.rss_seconds)
        else:
            clip = Path(tmp) / "bench.mp4"
            truth = make_media(clip, args.seconds)
            result["clip"] = {"seconds": args.seconds, "size": list(SIZE), "fps": 30}
            decode_only(clip)  # warm the file cache and the decoder's code
            c_dec, _, _ = cpu_of(lambda: decode_only(clip))
            result["fast_null"] = r = bench_engine(clip, False, NullAnalyser(), truth)
            # the floor again after the engine, so a load change shows in the two floors
            c_dec2, _, _ = cpu_of(lambda: decode_only(clip))
            floor = min(c_dec, c_dec2)
            result["decode_only_cpu_s_per_media_s"] = [round(c_dec / args.seconds, 4),
                                                        round(c_dec2 / args.seconds, 4)]
            result["front_end_over_decode_only"] = round(r["cpu_seconds"] / floor, 3)
            result["target_ratio"] = 2.0
            result["parts"] = bench_parts(clip, args.seconds)
            if args.realtime_seconds > 0:
                rt = Path(tmp) / "rt.mp4"
                make_media(rt, args.realtime_seconds)
                r = bench_engine(rt, realtime=True, analyser=FakeAnalyser(0.5))
                # The fake analyser sleeps (no CPU); its own wall time is not overhead.
                r["overhead_ms_per_window"] = round(r["window_build_ms"] + (r["mean_queue_ms"] or 0.0), 2)
                result["realtime_fake"] = r
    result["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    emit(result, args.out)


if __name__ == "__main__":
    main()
