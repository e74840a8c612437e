"""Make a real test clip: a face photo and synthetic speech, encoded with ``av``.

    python -m live.testclip --out clip.mp4 [--seconds 6] [--text "..."] [--still]
                            [--no-audio] [--no-face] [--size 640x480] [--fps 30]
                            [--overwrite] [--json]

The frames show the astronaut's face from ``skimage.data.astronaut()`` (a public-domain
NASA photo shipped with scikit-image) on a plain background, moving left → right; the
audio is ``espeak-ng`` (Debian package ``espeak-ng``) speaking a sentence, silence
elsewhere. Every stage of the project (live.run, model.serve.infer, quant.experiments,
the app, the tests and the benchmarks) can be tried on such a clip without a camera,
a microphone or a dataset.

Python API: ``make_clip(path, ...) -> dict`` returns the ground truth (speech extents,
face boxes per frame); ``speak``, ``face_image``, ``read_wav`` and ``write_wav`` are the
pieces it is made of; ``write_y4m`` writes frames for Chromium's fake camera.
"""
from __future__ import annotations

import argparse
import fractions
import itertools
import json
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import av
import numpy as np

from live.contract.cli import EXIT_OK, CliError, run_main
from live.contract.media import AUDIO_RATE
from live.resample import Resampler

SPEECH_EDGE = 0.02  # fraction of the peak below which espeak's lead-in/out counts as silence
BACKGROUND = (70, 110, 90)  # RGB, plain, far from skin tones
DEFAULT_SECONDS = 6.0  # s
DEFAULT_FPS = 30  # frames/s
DEFAULT_SIZE = (640, 480)  # px, (width, height)
DEFAULT_FACE_SIDE = 200  # px, side of the pasted face crop
DEFAULT_SPEECH = ((1.0, "hello there, how are you today"),)  # (start s, text)
AAC_FRAME = 1024  # samples per AAC frame; whole frames keep the pts bookkeeping simple
AUDIO_BIT_RATE = 64_000  # bit/s, AAC mono
VIDEO_BIT_RATE = 2_000_000  # bit/s, for codecs other than libx264 (which uses crf)
X264_OPTIONS = {"preset": "ultrafast", "tune": "zerolatency", "crf": "23"}  # test clips: fast, fair quality

# The astronaut's face in skimage.data.astronaut() (512x512), pixels [x0, y0, x1, y1],
# taken from BlazeFace full-range on the full photo. The square crop around it is what
# make_clip pastes into frames.
_FACE_IN_PHOTO = (172.0, 72.0, 282.0, 184.0)
_CROP_IN_PHOTO = (115, 18, 335, 238)  # x0, y0, x1, y1: 220 px square around the face
_CROP_SIDE = _CROP_IN_PHOTO[2] - _CROP_IN_PHOTO[0]
# Face box inside the crop, as fractions of the crop side (scale-free).
FACE_BOX_IN_CROP = tuple(
    (v - _CROP_IN_PHOTO[i % 2]) / _CROP_SIDE for i, v in enumerate(_FACE_IN_PHOTO)
)


def resample(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """(n,) float mono at ``src_rate`` → (m,) float32 at ``dst_rate``, whole (flushed),
    through the project's one resampler (``live.resample``)."""
    if src_rate == dst_rate:
        return np.asarray(samples, np.float32)
    res = Resampler(rate=dst_rate)
    return np.concatenate([res.from_array(np.asarray(samples, np.float32), src_rate), res.flush()])


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """16-bit PCM wav → ((n,) float32 mono in [-1, 1], rate)."""
    with wave.open(str(path), "rb") as w:
        rate, ch, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        raw = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError(f"{path}: only 16-bit wav supported, got {8 * width}-bit")
    x = np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0
    return x.reshape(-1, ch).mean(axis=1), rate


def write_wav(samples: np.ndarray, rate: int, path: str | Path) -> Path:
    """Write (n,) or (n, channels) float samples in [-1, 1] as 16-bit PCM wav."""
    x = np.asarray(samples, dtype=np.float32)
    ch = 1 if x.ndim == 1 else x.shape[1]
    pcm = (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2")
    path = Path(path)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(ch)
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(pcm.tobytes())
    return path


def speak(text: str, path: str | Path, rate_hz: int = AUDIO_RATE) -> np.ndarray:
    """Speak ``text`` with espeak-ng into ``path`` (wav at espeak's own rate) and return
    it resampled to ``rate_hz``: (n,) float32 mono."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng not found: apt-get install espeak-ng")
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    x, rate = read_wav(path)
    return resample(x, rate, rate_hz)


def _speech_extent(x: np.ndarray) -> tuple[int, int]:
    """First and one-past-last sample louder than SPEECH_EDGE of the peak."""
    loud = np.flatnonzero(np.abs(x) > SPEECH_EDGE * float(np.abs(x).max()))
    return int(loud[0]), int(loud[-1]) + 1


def face_image(size: int) -> np.ndarray:
    """The square crop around the astronaut's face, resized: (size, size, 3) uint8."""
    from skimage import data
    from skimage.transform import resize

    x0, y0, x1, y1 = _CROP_IN_PHOTO
    crop = data.astronaut()[y0:y1, x0:x1]
    if size == crop.shape[0]:
        return crop.copy()
    return (resize(crop, (size, size), anti_aliasing=True) * 255).round().astype(np.uint8)


def _face_track(n_frames: int, size: tuple[int, int], side: int, moving: bool):
    """Top-left corner of the pasted face per frame: left → right, gentle bob.
    Returns two (n_frames,) int arrays (x, y) in pixels."""
    w, h = size
    if not moving:
        return np.full(n_frames, (w - side) // 2, int), np.full(n_frames, (h - side) // 2, int)
    u = np.linspace(0.0, 1.0, n_frames)
    x = 10 + u * (w - side - 20)
    y = (h - side) / 2 + 0.15 * (h - side) * np.sin(2 * np.pi * u)
    return np.round(x).astype(int), np.round(y).astype(int)


def _speech_track(path: Path, seconds: float, speech) -> tuple[np.ndarray, list]:
    """(n,) float32 16 kHz track with each (start s, text) spoken, and the audible
    extents [(start_s, end_s), ...] clipped to the clip."""
    extents: list[tuple[float, float]] = []
    track = np.zeros(int(round(seconds * AUDIO_RATE)), np.float32)
    for i, (start, text) in enumerate(speech or ()):
        tmp = path.with_suffix(f".speech{i}.wav")
        try:
            x = speak(text, tmp, AUDIO_RATE)
        finally:
            tmp.unlink(missing_ok=True)
        a, b = _speech_extent(x)
        x = x[a:b]
        s0 = int(round(start * AUDIO_RATE))
        if s0 >= len(track):
            continue
        x = x[: len(track) - s0]
        track[s0 : s0 + len(x)] += x
        extents.append((s0 / AUDIO_RATE, (s0 + len(x)) / AUDIO_RATE))
    np.clip(track, -1.0, 1.0, out=track)
    return track, extents


# The project's mp4 writers (test clips, study windows): add every stream to the open
# ``container`` before the first packet, then mux each stream whole (encoder flushed).
def add_video(container, codec: str, fps, size: tuple[int, int], options: dict | None = None):
    """A yuv420p stream of ``size`` (w, h) px; encoder ``options``, else ``VIDEO_BIT_RATE``."""
    vs = container.add_stream(codec, rate=fps)
    vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
    if options:
        vs.options = options
    else:
        vs.bit_rate = VIDEO_BIT_RATE
    return vs


def add_audio(container, rate: int):
    """An AAC mono stream at ``rate`` Hz and ``AUDIO_BIT_RATE``."""
    stream = container.add_stream("aac", rate=int(rate), layout="mono")
    stream.bit_rate = AUDIO_BIT_RATE
    return stream


def mux_video(container, stream, frames, fps) -> None:
    """RGB ``frames`` (an iterable of (H, W, 3) uint8) at ``fps`` (int or Fraction)."""
    for i, img in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts, frame.time_base = i, 1 / fractions.Fraction(fps)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def mux_audio(container, stream, samples: np.ndarray, rate: int) -> None:
    """(n,) float32 mono ``samples`` at ``rate`` Hz, in whole AAC frames."""
    for pts in range(0, len(samples), AAC_FRAME):
        af = av.AudioFrame.from_ndarray(samples[None, pts : pts + AAC_FRAME], format="flt", layout="mono")
        af.sample_rate, af.pts, af.time_base = int(rate), pts, fractions.Fraction(1, int(rate))
        container.mux(stream.encode(af))
    container.mux(stream.encode(None))


def _frames(size: tuple[int, int], face_px: np.ndarray | None, xs: np.ndarray, ys: np.ndarray):
    """The clip's (h, w, 3) uint8 frames: ``BACKGROUND`` with ``face_px`` (None: no face)
    pasted with its top-left corner at (xs[i], ys[i]) in frame i."""
    w, h = size
    bg = np.full((h, w, 3), BACKGROUND, np.uint8)
    for x, y in zip(xs.tolist(), ys.tolist()):
        img = bg.copy()
        if face_px is not None:
            img[y : y + face_px.shape[0], x : x + face_px.shape[1]] = face_px
        yield img


def make_clip(
    path: str | Path,
    seconds: float = DEFAULT_SECONDS,
    fps: int = DEFAULT_FPS,
    size: tuple[int, int] = DEFAULT_SIZE,
    speech: list[tuple[float, str]] | None = DEFAULT_SPEECH,
    audio: bool = True,
    face: bool = True,
    face_scale: int = DEFAULT_FACE_SIDE,
    moving: bool = True,
    audio_rate: int = AUDIO_RATE,
    codec: str = "libx264",
) -> dict:
    """Write an mp4 (``codec`` video, yuv420p + AAC mono audio at ``audio_rate``).

    Frames: a plain background with the astronaut's face crop (``face_scale`` px
    square) moving left → right (``moving``) or centred. Audio: espeak-ng speech
    starting at each given time (seconds), silence elsewhere.

    Returns the ground truth::

        {"speech": [(start_s, end_s), ...],        # audible extent, clipped to the clip
         "face_boxes": {frame_index: [x0, y0, x1, y1]},  # pixels; empty if face=False
         "fps": fps, "seconds": seconds, "audio_rate": audio_rate (0 if audio=False),
         "size": (w, h), "n_frames": n, "audio": (n,) float32 16 kHz or None,
         "path": str}
    """
    path = Path(path)
    w, h = size
    n_frames = int(round(seconds * fps))
    side = int(face_scale)
    if face and (side > w or side > h):
        raise ValueError(f"face_scale {side} px does not fit a {w}x{h} frame")
    if codec == "libx264" and (w % 2 or h % 2):
        raise ValueError(f"yuv420p needs an even frame size, got {w}x{h}")

    track16, truth_speech = _speech_track(path, seconds, speech) if audio else (None, [])
    face_px = face_image(side) if face else None
    xs, ys = _face_track(n_frames, size, side, moving)
    fx0, fy0, fx1, fy1 = FACE_BOX_IN_CROP
    boxes = {i: [x + fx0 * side, y + fy0 * side, x + fx1 * side, y + fy1 * side]
             for i, (x, y) in enumerate(zip(xs.tolist(), ys.tolist()))} if face else {}

    container = av.open(str(path), "w")
    try:
        vs = add_video(container, codec, fps, size, X264_OPTIONS if codec == "libx264" else None)
        as_ = add_audio(container, audio_rate) if audio else None
        mux_video(container, vs, _frames(size, face_px, xs, ys), fps)
        if as_ is not None:
            mux_audio(container, as_, resample(track16, AUDIO_RATE, audio_rate), audio_rate)
    finally:
        container.close()

    return {"speech": truth_speech, "face_boxes": boxes, "fps": fps, "seconds": float(seconds),
            "audio_rate": audio_rate if audio else 0, "size": (w, h), "n_frames": n_frames,
            "audio": track16, "path": str(path)}


def write_y4m(frames, path: str | Path, fps: int = DEFAULT_FPS) -> Path:
    """Write RGB frames ((n, H, W, 3) uint8, or an iterable of (H, W, 3) uint8) as a
    4:2:0 y4m (``C420jpeg``-compatible planar YUV), the file Chromium's fake camera
    reads (``--use-file-for-fake-video-capture``). H and W must be even."""
    path = Path(path)
    it = iter(frames)
    first = np.asarray(next(it))
    h, w = first.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"y4m 4:2:0 needs even frame size, got {w}x{h}")
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for img in itertools.chain([first], it):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            yuv = frame.reformat(format="yuv420p").to_ndarray()  # (H*3/2, W) planar
            f.write(b"FRAME\n")
            f.write(np.ascontiguousarray(yuv).tobytes())
    return path


# --------------------------------------------------------------------------- command line
def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 640x480, got {text!r}") from None
    if w <= 0 or h <= 0 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"width and height must be even and positive, got {text!r}")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m live.testclip", description=__doc__.split("\n\n")[1])
    p.add_argument("--out", required=True, help="mp4 file to write")
    p.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="clip length in s")
    p.add_argument("--text", default=DEFAULT_SPEECH[0][1],
                   help="sentence espeak-ng speaks ('' for a silent audio track)")
    p.add_argument("--speech-start", type=float, default=DEFAULT_SPEECH[0][0], help="s into the clip")
    p.add_argument("--no-audio", action="store_true", help="no audio stream at all")
    p.add_argument("--no-face", action="store_true", help="background only")
    p.add_argument("--still", action="store_true", help="face centred instead of moving")
    p.add_argument("--size", type=_size, default=DEFAULT_SIZE, help="WIDTHxHEIGHT in px (even)")
    p.add_argument("--fps", type=int, default=DEFAULT_FPS)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--json", action="store_true", help="print the ground truth as one JSON line")
    return p


def _check(args) -> None:
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise CliError(f"{out} exists (pass --overwrite to replace it)")
    if not out.parent.is_dir():
        raise CliError(f"{out.parent}: no such folder")
    if not args.seconds > 0:
        raise CliError(f"--seconds must be > 0, got {args.seconds}")
    if args.fps <= 0:
        raise CliError(f"--fps must be > 0, got {args.fps}")
    speaking = not args.no_audio and args.text.strip()
    if speaking and not 0 <= args.speech_start < args.seconds:
        raise CliError(f"--speech-start must be in [0, --seconds), got {args.speech_start} "
                       f"(or pass --text '' for a silent track)")
    w, h = args.size
    if not args.no_face and min(w, h) < DEFAULT_FACE_SIDE:
        raise CliError(f"--size {w}x{h} is smaller than the {DEFAULT_FACE_SIDE} px face")
    if speaking and shutil.which("espeak-ng") is None:
        raise CliError("espeak-ng not found: apt-get install espeak-ng (or pass --no-audio)")


def _summary(truth: dict, moving: bool) -> str:
    w, h = truth["size"]
    face = ("face moving" if moving else "face still") if truth["face_boxes"] else "no face"
    if not truth["audio_rate"]:
        sound = "no audio"
    elif truth["speech"]:
        sound = "speech " + ", ".join(f"{a:.2f}-{b:.2f} s" for a, b in truth["speech"])
    else:
        sound = "silent audio"
    return f"wrote {truth['path']}: {truth['seconds']:g} s, {w}x{h} at {truth['fps']} fps, {face}, {sound}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    _check(args)
    truth = make_clip(
        args.out, seconds=args.seconds, fps=args.fps, size=args.size,
        speech=[(args.speech_start, args.text)] if args.text.strip() else [],
        audio=not args.no_audio, face=not args.no_face, moving=not args.still,
    )
    if args.json:
        keep = ("path", "seconds", "fps", "size", "n_frames", "audio_rate", "speech")
        print(json.dumps({**{k: truth[k] for k in keep}, "face": bool(truth["face_boxes"])}))
    else:
        print(_summary(truth, moving=not args.still))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
