"""Decode each manifest sample once and cache what training needs as one ``.npz``.

Per sample (``cache_path(cache_dir, id)``)::

    frames        (T, h, w, 3) uint8 RGB, T = 8 uniform frames, long side ≤ FRAME_MAX_SIDE
                  (T = 0 for an audio-only sample)
    faces         (T, 224, 224, 3) uint8 face crops (zeros where no face)
    face_present  (T,) bool
    audio         (n,) float32 mono 16 kHz (n = 0 when the sample has no audio)
    has_video, has_audio   () bool

Faces are cropped from the full-resolution frames (small faces need the pixels), then
the frames are scaled down for storage: the vision tower sees 384 px anyway.

A video that cannot be decoded is reported by id and left out of the cache — never
replaced by another sample or by blank frames; ``preprocess_manifest`` returns the
failures so the builder can drop those samples and count them. ``load_cached`` raises
for a sample that is not in the cache, so a training dataset built on it cannot
silently swap a sample either.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.data.manifest import resolve_media

NUM_FRAMES = 8  # frames per clip (paper §4.4)
AUDIO_RATE = 16_000  # Hz, Whisper's rate
FACE_SIZE = 224  # px, FaceXFormer's input side
FRAME_MAX_SIDE = 384  # px, long side of stored frames (SigLIP input is 384×384)
# Cap on decoded audio: Whisper's window is 30 s; keep a little more so a later crop
# can choose, but never hold a whole film in memory.
AUDIO_MAX_S = 60.0

# (frames (T,H,W,3) uint8, times (T,) s) -> (crops (T,224,224,3) uint8, present (T,) bool)
FaceCropper = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


class DecodeError(RuntimeError):
    """A media file could not be read or holds no usable stream."""


def sample_indices(num_available: int, num_frames: int = NUM_FRAMES) -> np.ndarray:
    """Uniform frame indices, first and last frame included (repeats when fewer frames
    than asked). The processor samples with this same function."""
    if num_available < 1:
        raise ValueError(f"no frames to sample from (num_available={num_available})")
    return np.linspace(0, num_available - 1, num_frames).round().astype(np.int64)


def _storage_size(w: int, h: int, max_side: int) -> tuple[int, int]:
    """Even (w, h) with the long side at most ``max_side``, aspect kept."""
    scale = min(1.0, max_side / max(w, h))
    return max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2)


def decode_frames(path: str | Path, num_frames: int = NUM_FRAMES) -> tuple[list, np.ndarray]:
    """Decode ``num_frames`` uniform frames of a video.

    Returns:
        (frames, times): a list of ``av.VideoFrame`` (full resolution) and their
        timestamps in seconds, shape (num_frames,).

    Raises:
        DecodeError: unreadable file, no video stream, or no decodable frame.
    """
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise DecodeError(f"{path}: no video stream")
            # Count frames by demuxing packets (cheap: no decoding), then decode once
            # and keep the chosen ones. Packet and frame counts agree for the codecs
            # in these datasets; a mismatch is caught below.
            n = sum(1 for p in c.demux(video=0) if p.size)
            if n == 0:
                raise DecodeError(f"{path}: video stream has no frames")
            want = sample_indices(n, num_frames).tolist()
            wanted = set(want)
            c.seek(0)
            keep: dict[int, Any] = {}
            decoded = 0
            for i, frame in enumerate(c.decode(video=0)):
                decoded = i + 1
                if i in wanted:
                    keep[i] = frame
    except (av.error.FFmpegError, OSError) as e:
        raise DecodeError(f"{path}: {e}") from None
    if not decoded:
        raise DecodeError(f"{path}: no decodable video frame")
    if decoded < n:
        # fewer frames than packets: pick again over what actually decodes
        return decode_frames_exact(path, num_frames)
    frames = [keep[i] for i in want]
    times = np.array([float(f.time) if f.time is not None else np.nan for f in frames])
    return frames, times


def decode_frames_exact(path: Path, num_frames: int) -> tuple[list, np.ndarray]:
    """Fallback: keep every decoded frame (low memory: YUV frames), then pick."""
    import av

    try:
        with av.open(str(path)) as c:
            all_frames = list(c.decode(video=0))
    except (av.error.FFmpegError, OSError) as e:
        raise DecodeError(f"{path}: {e}") from None
    if not all_frames:
        raise DecodeError(f"{path}: no decodable video frame")
    frames = [all_frames[i] for i in sample_indices(len(all_frames), num_frames).tolist()]
    times = np.array([float(f.time) if f.time is not None else np.nan for f in frames])
    return frames, times


def decode_audio(path: str | Path, rate: int = AUDIO_RATE, max_s: float = AUDIO_MAX_S) -> np.ndarray | None:
    """First audio stream → (n,) float32 mono at ``rate``; None when the file has no
    audio stream.

    Raises:
        DecodeError: unreadable file or undecodable audio.
    """
    import av

    path = Path(path)
    limit = int(max_s * rate)
    try:
        with av.open(str(path)) as c:
            if not c.streams.audio:
                return None
            res = av.AudioResampler(format="flt", layout="mono", rate=rate)
            chunks, total = [], 0
            for frame in c.decode(audio=0):
                for out in res.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    total += chunks[-1].size
                if total >= limit:
                    break
            else:
                chunks += [f.to_ndarray().reshape(-1) for f in res.resample(None)]
    except (av.error.FFmpegError, OSError) as e:
        raise DecodeError(f"{path}: {e}") from None
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    return audio[:limit]


def default_face_cropper(frames: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``live.faces.crop_faces`` (BlazeFace + IoU tracking), imported on first use so
    this module loads without mediapipe."""
    from live.faces import crop_faces

    return crop_faces(frames, times)


def preprocess_sample(
    sample: dict[str, Any],
    base_dir: str | Path,
    face_cropper: FaceCropper,
    num_frames: int = NUM_FRAMES,
    max_side: int = FRAME_MAX_SIDE,
) -> dict[str, np.ndarray]:
    """Decode one manifest sample into the arrays stored in its ``.npz``.

    Raises:
        DecodeError: unreadable media.
        ValueError: the face cropper returned the wrong shapes.
    """
    video, audio_path = resolve_media(sample, base_dir)
    frames = np.zeros((0, 2, 2, 3), np.uint8)
    faces = np.zeros((0, FACE_SIZE, FACE_SIZE, 3), np.uint8)
    present = np.zeros(0, bool)
    if video is not None:
        if not video.is_file():
            raise DecodeError(f"{video}: no such file")
        av_frames, times = decode_frames(video, num_frames)
        full = np.stack([f.to_ndarray(format="rgb24") for f in av_frames])
        if np.isnan(times).any():  # no timestamps: assume the clip's frames are 0.5 s apart
            times = np.arange(num_frames) * 0.5
        faces, present = face_cropper(full, times)
        faces, present = np.asarray(faces), np.asarray(present)
        if faces.shape != (num_frames, FACE_SIZE, FACE_SIZE, 3) or faces.dtype != np.uint8:
            raise ValueError(f"face cropper returned {faces.shape} {faces.dtype}, "
                             f"want ({num_frames}, {FACE_SIZE}, {FACE_SIZE}, 3) uint8")
        if present.shape != (num_frames,) or present.dtype != bool:
            raise ValueError(f"face cropper presence is {present.shape} {present.dtype}, "
                             f"want ({num_frames},) bool")
        w, h = _storage_size(full.shape[2], full.shape[1], max_side)
        frames = np.stack([f.to_ndarray(format="rgb24", width=w, height=h) for f in av_frames])
    src = audio_path if audio_path is not None else video
    if audio_path is not None and not audio_path.is_file():
        raise DecodeError(f"{audio_path}: no such file")
    audio = decode_audio(src)
    if video is None and (audio is None or audio.size == 0):
        raise DecodeError(f"{src}: audio-only sample without audio")
    return {
        "frames": frames,
        "faces": faces,
        "face_present": present,
        "audio": audio if audio is not None else np.zeros(0, np.float32),
        "has_video": np.array(video is not None),
        "has_audio": np.array(audio is not None and audio.size > 0),
    }


def cache_path(cache_dir: str | Path, sample_id: str) -> Path:
    """File name for a sample: its id made file-safe, plus a short hash of the exact id
    when that changed it (so "a/b" and "a_b" never share a file)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", sample_id)
    if safe != sample_id or not safe.strip("."):
        safe = f"{safe}-{hashlib.sha1(sample_id.encode()).hexdigest()[:8]}"
    return Path(cache_dir) / f"{safe}.npz"


def load_cached(cache_dir: str | Path, sample_id: str) -> dict[str, np.ndarray | None]:
    """A cached sample as ``model.net.processor.Clip`` keyword arguments: ``frames``,
    ``faces``, ``face_mask`` (the stored ``face_present``) and ``audio``, None where the
    sample has no such modality.

    Raises:
        FileNotFoundError: the sample was never cached (e.g. it failed to decode).
        ValueError: the file is damaged.
    """
    path = cache_path(cache_dir, sample_id)
    if not path.is_file():
        raise FileNotFoundError(f"sample {sample_id!r}: not in cache ({path})")
    try:
        with np.load(path) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"sample {sample_id!r}: damaged cache file {path}: {e}") from None
    return clip_arrays(d)


def clip_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray | None]:
    """``preprocess_sample``'s arrays (or a cache file's) → ``model.net.processor.Clip``
    keyword arguments, None where the sample has no such modality."""
    has_video, has_audio = bool(arrays["has_video"]), bool(arrays["has_audio"])
    return {
        "frames": arrays["frames"] if has_video else None,
        "faces": arrays["faces"] if has_video else None,
        "face_mask": arrays["face_present"] if has_video else None,
        "audio": arrays["audio"] if has_audio else None,
    }


@dataclass
class PreprocessSummary:
    """done: ids decoded and written now; cached: ids already in the cache (skipped);
    failed: id → reason for samples that could not be decoded (not written)."""

    done: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def preprocess_manifest(
    samples: Sequence[dict[str, Any]],
    cache_dir: str | Path,
    base_dir: str | Path = ".",
    face_cropper: FaceCropper | None = None,
    num_frames: int = NUM_FRAMES,
    max_side: int = FRAME_MAX_SIDE,
    overwrite: bool = False,
    progress: bool = True,
) -> PreprocessSummary:
    """Decode every sample once into ``cache_dir`` with a progress bar.

    Args:
        samples: validated manifest samples.
        cache_dir: output folder (created).
        base_dir: folder relative media paths are resolved against (the manifest's).
        face_cropper: see ``FaceCropper``; default ``live.faces.crop_faces``.
        num_frames, max_side: frames per clip and stored long side (px).
        overwrite: re-decode samples already cached.
        progress: show a tqdm bar on stderr.

    Returns:
        PreprocessSummary; failures are reported there by id, never substituted.
    """
    from tqdm import tqdm

    if num_frames < 1 or max_side < 2:
        raise ValueError(f"num_frames={num_frames}, max_side={max_side}: must be >= 1 and >= 2")
    cropper = face_cropper or default_face_cropper
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    summary = PreprocessSummary()
    for sample in tqdm(samples, desc="preprocess", unit="clip", disable=not progress):
        sid = sample["id"]
        out = cache_path(cache_dir, sid)
        if out.is_file() and not overwrite:
            summary.cached.append(sid)
            continue
        try:
            arrays = preprocess_sample(sample, base_dir, cropper, num_frames, max_side)
        except DecodeError as e:
            summary.failed[sid] = str(e)
            continue
        tmp = out.with_name(out.stem + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(out)  # atomic: a killed run never leaves a half-written sample
        summary.done.append(sid)
    return summary
