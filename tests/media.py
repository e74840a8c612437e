"""Test media made on the spot: real speech (espeak-ng) and a real face photo
(``skimage.data.astronaut()``) encoded into files with ``av``.

Every test suite in the project uses these, so they are deterministic and fast
(a 6 s 640x480 clip encodes in about a second).

Public helpers
--------------
``speak(text, path, rate_hz=16000) -> (samples,) float32``
``make_clip(path, seconds=6.0, ...) -> dict`` (ground truth, see its docstring)
``write_y4m(frames, path)``: 4:2:0 y4m, as Chromium's fake camera wants.
``write_wav(samples, rate, path)``: 16-bit PCM wav.
``face_image(size) -> (size, size, 3) uint8`` and ``FACE_BOX_IN_CROP``.
"""
from __future__ import annotations

import fractions
import shutil
import subprocess
import wave
from pathlib import Path

import av
import numpy as np

AUDIO_RATE = 16_000  # Hz, what the whole project works at
SPEECH_EDGE = 0.02  # fraction of the peak below which espeak's lead-in/out counts as silence
BACKGROUND = (70, 110, 90)  # RGB, plain, far from skin tones

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


def _resample_to(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Band-limited resampling through av's resampler (libswresample); (n,) float32 mono."""
    if src_rate == dst_rate:
        return samples.astype(np.float32, copy=False)
    frame = av.AudioFrame.from_ndarray(
        samples.astype(np.float32)[None, :], format="flt", layout="mono"
    )
    frame.sample_rate = src_rate
    res = av.AudioResampler(format="flt", layout="mono", rate=dst_rate)
    out = [f.to_ndarray().reshape(-1) for f in res.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in res.resample(None)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


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
    it resampled to ``rate_hz`` mono float32, shape (n,)."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng not found: apt-get install espeak-ng")
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    x, rate = read_wav(path)
    return _resample_to(x, rate, rate_hz)


def _speech_extent(x: np.ndarray) -> tuple[int, int]:
    """First and one-past-last sample louder than SPEECH_EDGE of the peak."""
    loud = np.flatnonzero(np.abs(x) > SPEECH_EDGE * float(np.abs(x).max()))
    return int(loud[0]), int(loud[-1]) + 1


def face_image(size: int) -> np.ndarray:
    """The square crop around the astronaut's face, resized to (size, size, 3) uint8."""
    from skimage import data
    from skimage.transform import resize

    x0, y0, x1, y1 = _CROP_IN_PHOTO
    crop = data.astronaut()[y0:y1, x0:x1]
    if size == crop.shape[0]:
        return crop.copy()
    return (resize(crop, (size, size), anti_aliasing=True) * 255).round().astype(np.uint8)


def _face_track(n_frames: int, size: tuple[int, int], side: int, moving: bool):
    """Top-left corner of the pasted face per frame: left → right, gentle bob."""
    w, h = size
    if not moving:
        x = np.full(n_frames, (w - side) // 2)
        y = np.full(n_frames, (h - side) // 2)
        return x.astype(int), y.astype(int)
    u = np.linspace(0.0, 1.0, n_frames)
    x = 10 + u * (w - side - 20)
    y = (h - side) / 2 + 0.15 * (h - side) * np.sin(2 * np.pi * u)
    return np.round(x).astype(int), np.round(y).astype(int)


def make_clip(
    path: str | Path,
    seconds: float = 6.0,
    fps: int = 30,
    size: tuple[int, int] = (640, 480),
    speech: list[tuple[float, str]] | None = ((1.0, "hello there, how are you today"),),
    audio: bool = True,
    face: bool = True,
    face_scale: int = 200,
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

    # --- audio track (16 kHz float32), then resampled to audio_rate for encoding
    truth_speech: list[tuple[float, float]] = []
    track16 = np.zeros(int(round(seconds * AUDIO_RATE)), np.float32)
    if audio:
        for i, (start, text) in enumerate(speech or ()):
            x = speak(text, path.with_suffix(f".speech{i}.wav"), AUDIO_RATE)
            path.with_suffix(f".speech{i}.wav").unlink(missing_ok=True)
            a, b = _speech_extent(x)
            x = x[a:b]
            s0 = int(round(start * AUDIO_RATE))
            if s0 >= len(track16):
                continue
            x = x[: len(track16) - s0]
            track16[s0 : s0 + len(x)] += x
            truth_speech.append((s0 / AUDIO_RATE, (s0 + len(x)) / AUDIO_RATE))
        np.clip(track16, -1.0, 1.0, out=track16)

    # --- video frames
    bg = np.empty((h, w, 3), np.uint8)
    bg[:] = BACKGROUND
    face_px = face_image(side) if face else None
    xs, ys = _face_track(n_frames, size, side, moving)
    fx0, fy0, fx1, fy1 = FACE_BOX_IN_CROP
    boxes: dict[int, list[float]] = {}

    container = av.open(str(path), "w")
    vs = container.add_stream(codec, rate=fps)
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    if codec == "libx264":
        vs.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "23"}
    else:
        vs.bit_rate = 2_000_000
    as_ = None
    if audio:
        as_ = container.add_stream("aac", rate=audio_rate, layout="mono")
        as_.bit_rate = 64_000

    for i in range(n_frames):
        img = bg.copy()
        if face:
            x, y = int(xs[i]), int(ys[i])
            img[y : y + side, x : x + side] = face_px
            boxes[i] = [x + fx0 * side, y + fy0 * side, x + fx1 * side, y + fy1 * side]
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i
        frame.time_base = fractions.Fraction(1, fps)
        for pkt in vs.encode(frame):
            container.mux(pkt)
    for pkt in vs.encode(None):
        container.mux(pkt)

    if as_ is not None:
        enc = _resample_to(track16, AUDIO_RATE, audio_rate)
        step = 1024  # AAC frame size; whole frames keep the pts bookkeeping simple
        for pts in range(0, len(enc), step):
            chunk = enc[pts : pts + step]
            af = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
            af.sample_rate = audio_rate
            af.pts = pts
            af.time_base = fractions.Fraction(1, audio_rate)
            for pkt in as_.encode(af):
                container.mux(pkt)
        for pkt in as_.encode(None):
            container.mux(pkt)
    container.close()

    return {
        "speech": truth_speech,
        "face_boxes": boxes,
        "fps": fps,
        "seconds": float(seconds),
        "audio_rate": audio_rate if audio else 0,
        "size": (w, h),
        "n_frames": n_frames,
        "audio": track16 if audio else None,
        "path": str(path),
    }


def write_y4m(frames, path: str | Path, fps: int = 30) -> Path:
    """Write RGB frames ((n, H, W, 3) uint8 or an iterable of them) as a 4:2:0 y4m
    (``C420jpeg``-compatible planar YUV), which Chromium's fake camera reads.
    H and W must be even."""
    path = Path(path)
    it = iter(frames)
    first = np.asarray(next(it))
    h, w = first.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"y4m 4:2:0 needs even frame size, got {w}x{h}")
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for img in _chain(first, it):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            yuv = frame.reformat(format="yuv420p").to_ndarray()  # (H*3/2, W) planar
            f.write(b"FRAME\n")
            f.write(np.ascontiguousarray(yuv).tobytes())
    return path


def _chain(first, rest):
    yield first
    yield from rest


def clip_frames(path: str | Path) -> np.ndarray:
    """Decode every video frame of a file to (n, H, W, 3) uint8 RGB (test helper)."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


_CACHE_DIR: Path | None = None
_CACHE: dict = {}


def cached_clip(name: str, **kwargs) -> dict:
    """``make_clip`` once per test process for each (name, kwargs): test modules share
    media without a conftest fixture. Files live in a per-process temp folder."""
    global _CACHE_DIR
    import tempfile

    key = (name, tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        if _CACHE_DIR is None:
            _CACHE_DIR = Path(tempfile.mkdtemp(prefix="omni-media-"))
        _CACHE[key] = make_clip(_CACHE_DIR / f"{name}.mp4", **kwargs)
    return _CACHE[key]
