"""Decode each manifest sample once and cache what training needs as one ``.npz``.

Per sample (``cache_path(cache_dir, id)``) the fields of ``live.contract.media.Clip``
(defined once, in ``live.window.Window``): ``frames`` (long side scaled to at most
FRAME_MAX_SIDE for storage), ``faces``, ``face_present``, ``audio`` (n = 0 when the
sample has none), ``has_video`` and ``has_audio`` (0-d bool arrays).

The frames and face crops come from ``live.window.file_window``: the same sampling
rule, face tracker settings and primary-face rule as a live window over the same span,
so training sees what serving sees. Faces are cropped from the full-resolution frames
(small faces need the pixels), then the frames are scaled down for storage: the vision
tower sees 384 px anyway. Audio comes from ``live.sources.decode_audio``.

A video that cannot be decoded is reported by id and left out of the cache, never
replaced (``preprocess_manifest`` returns the failures; ``load_cached`` raises for a
sample not in the cache): docs/data.md "Failures".
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from live.contract.media import FRAME_MAX_SIDE, N_FRAMES, Clip, ingest_size, no_audio, no_faces, no_frames
from model.data.manifest import resolve_media

# Cap on decoded audio: Whisper's window is 30 s; keep a little more so a later crop
# can choose, but never hold a whole film in memory.
AUDIO_MAX_S = 60.0

# () -> a fresh live.faces.FaceTracker for one clip, or None for "no faces"
FaceTrackerFactory = Callable[[], Any]


class DecodeError(RuntimeError):
    """A media file could not be read or holds no usable stream."""


def _scaled(frames: np.ndarray, max_side: int) -> np.ndarray:
    """(T, H, W, 3) uint8 → (T, h, w, 3) at ``live.contract.media.ingest_size`` for ``max_side``
    (the live rule: a picture within ``max_side`` is kept as decoded, odd sides too)."""
    h, w = frames.shape[1:3]
    sw, sh = ingest_size(w, h, max_side)
    if (sw, sh) == (w, h):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((sw, sh), Image.BILINEAR)) for f in frames])


def default_face_tracker():
    """A fresh ``live.faces.FaceTracker`` with the live defaults on the process's shared
    BlazeFace detector (imported on first use, so this module loads without mediapipe)."""
    from live.faces import FaceTracker, default_detector

    return FaceTracker(default_detector())


def no_face_tracker() -> None:
    """A ``FaceTrackerFactory`` for "face detection off": every frame's face absent."""
    return None


def preprocess_sample(
    sample: dict[str, Any],
    base_dir: str | Path,
    face_tracker: FaceTrackerFactory = default_face_tracker,
    num_frames: int = N_FRAMES,
    max_side: int = FRAME_MAX_SIDE,
    span: tuple[float, float] | None = None,
) -> Clip:
    """Decode one manifest sample into the `Clip` whose fields its ``.npz`` stores.

    span: (start_s, end_s) on the file clock; None = the whole video. The frames and
        crops equal those of a live window over the same span (``live.window.file_window``).
        The audio is the whole track (up to AUDIO_MAX_S) either way.

    Raises:
        DecodeError: unreadable media.
    """
    from live.sources import SourceError, decode_audio
    from live.window import file_window

    video, audio_path = resolve_media(sample, base_dir)
    frames = no_frames()
    faces, present = no_faces(num_frames)
    try:
        if video is not None:
            if not video.is_file():
                raise DecodeError(f"{video}: no such file")
            got = file_window(video, *(span or (None, None)), n=num_frames, tracker=face_tracker())
            faces, present = got.faces, got.face_present
            frames = _scaled(got.frames, max_side)
        src = audio_path if audio_path is not None else video
        audio = decode_audio(src, max_s=AUDIO_MAX_S)
    except SourceError as e:
        raise DecodeError(str(e)) from None
    if video is None and (audio is None or audio.size == 0):
        raise DecodeError(f"{src}: audio-only sample without audio")
    return Clip(frames=frames, faces=faces, face_present=present, audio=audio if audio is not None else no_audio(),
                has_video=video is not None, has_audio=audio is not None and audio.size > 0)


def cache_path(cache_dir: str | Path, sample_id: str) -> Path:
    """File name for a sample: its id made file-safe, plus a short hash of the exact id
    when that changed it (so "a/b" and "a_b" never share a file)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", sample_id)
    if safe != sample_id or not safe.strip("."):
        safe = f"{safe}-{hashlib.sha1(sample_id.encode()).hexdigest()[:8]}"
    return Path(cache_dir) / f"{safe}.npz"


def load_cached(cache_dir: str | Path, sample_id: str) -> Clip:
    """A cached sample, the `Clip` ``preprocess_sample`` gave.

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
    return Clip(frames=d["frames"], faces=d["faces"], face_present=d["face_present"].astype(bool), audio=d["audio"],
                has_video=bool(d["has_video"]), has_audio=bool(d["has_audio"]))


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
    face_tracker: FaceTrackerFactory = default_face_tracker,
    num_frames: int = N_FRAMES,
    max_side: int = FRAME_MAX_SIDE,
    overwrite: bool = False,
    progress: bool = True,
) -> PreprocessSummary:
    """Decode every sample once into ``cache_dir`` with a progress bar.

    Args:
        samples: validated manifest samples.
        cache_dir: output folder (created).
        base_dir: folder relative media paths are resolved against (the manifest's).
        face_tracker: makes a fresh face tracker per clip (see ``FaceTrackerFactory``);
            default: live's BlazeFace tracker.
        num_frames, max_side: frames per clip and stored long side (px).
        overwrite: re-decode samples already cached.
        progress: show a tqdm bar on stderr.

    Returns:
        PreprocessSummary; failures are reported there by id, never substituted.
    """
    from tqdm import tqdm

    if num_frames < 1 or max_side < 2:
        raise ValueError(f"num_frames={num_frames}, max_side={max_side}: must be >= 1 and >= 2")
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
            clip = preprocess_sample(sample, base_dir, face_tracker, num_frames, max_side)
        except DecodeError as e:
            summary.failed[sid] = str(e)
            continue
        tmp = out.with_name(out.stem + ".tmp.npz")
        np.savez_compressed(tmp, **{f.name: getattr(clip, f.name) for f in fields(Clip)})
        tmp.replace(out)  # atomic: a killed run never leaves a half-written sample
        summary.done.append(sid)
    return summary
