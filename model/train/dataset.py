"""The training dataset: manifest samples → (id, conversation, `Clip`) for one phase.

Media come from the preprocessing cache (`model.data.preprocess.load_cached`, one `.npz`
per sample) or, without a cache, are decoded on the fly with the same function the
cache is built with (`preprocess_sample`), so both paths give identical arrays.

What each phase sees (phase 1 audio only, 2 frames + faces only, 3 all): docs/training.md.
A missing modality has one form from window to model: see `live.window.Window`.

A sample that cannot be loaded, or lacks the modality its phase needs, raises
`SampleError` naming its id. Nothing is ever skipped or replaced by another sample:
a silently swapped sample would train on data nobody asked for.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from model.data.manifest import resolve_media
from model.data.preprocess import (DecodeError, FaceTrackerFactory, cache_path, default_face_tracker, load_cached,
                                   preprocess_sample)
from live.contract.media import Clip

PHASES = (1, 2, 3)
# Which modalities each phase feeds the model, and which one it cannot do without.
PHASE_MODALITIES = {1: ("audio",), 2: ("video",), 3: ("video", "audio")}
PHASE_REQUIRED = {1: "audio", 2: "video", 3: "video"}


class SampleError(ValueError):
    """A training sample is unusable; the message starts with `sample '<id>':`."""


def clip_for_phase(clip: Clip, phase: int, max_audio_samples: int | None) -> Clip:
    """A sample's `Clip` (cached or decoded) → the `Clip` phase
    `phase` trains on: the modalities the phase does not use are marked absent
    (`has_video` / `has_audio` False, `face_present` all False).

    Audio longer than the encoder window (`max_audio_samples`, 30 s × 16 kHz for
    Whisper) keeps its first window: the cache holds up to 60 s so later crops can
    choose, and the processor refuses anything longer than the encoder sees.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    keep = PHASE_MODALITIES[phase]
    if "video" not in keep and clip.has_video:
        clip = replace(clip, frames=None, faces=None, face_present=None, has_video=False)
    if "audio" not in keep and clip.has_audio:
        clip = replace(clip, audio=None, has_audio=False)
    if clip.has_audio and max_audio_samples is not None and clip.audio.shape[0] > max_audio_samples:
        clip = replace(clip, audio=clip.audio[:max_audio_samples])
    return clip


def check_media(samples: Sequence[dict[str, Any]], base_dir: str | Path, cache_dir: str | Path | None) -> None:
    """Every sample's files exist: its cached ``.npz`` (with a cache) or its video and
    audio (without). Cheap (no decoding), so a missing file is found before the model
    loads, not minutes into training. Raises SampleError naming the sample and file."""
    for sample in samples:
        sid = sample["id"]
        if cache_dir is not None:
            wanted = [cache_path(cache_dir, sid)]
        else:
            wanted = [p for p in resolve_media(sample, base_dir) if p is not None]
        for path in wanted:
            if not path.is_file():
                raise SampleError(f"sample {sid!r}: {path}: no such file")


class TrainDataset(Dataset):
    """Manifest samples of one phase.

    Args:
        samples: validated manifest samples (`model.data.manifest.read_manifest`).
        phase: 1, 2 or 3 (decides which modalities are kept, see module docstring).
        cache_dir: preprocessing cache; None decodes each sample on every access.
        base_dir: folder relative media paths resolve against (the manifest's folder),
            only used without a cache.
        face_tracker: for on-the-fly decoding, a fresh face tracker per clip
            (`model.data.preprocess.FaceTrackerFactory`); default live's BlazeFace tracker.
        max_audio_samples: audio is cut to this many 16 kHz samples (encoder window).

    Item i: {"id": str, "conversation": [{"role", "content"}, ...], "clip": Clip}
    (fields and absent modalities: see `live.window.Window`).
    """

    def __init__(
        self,
        samples: Sequence[dict[str, Any]],
        phase: int,
        cache_dir: str | Path | None = None,
        base_dir: str | Path = ".",
        face_tracker: FaceTrackerFactory = default_face_tracker,
        max_audio_samples: int | None = None,
    ):
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        if not samples:
            raise ValueError("the manifest has no samples")
        if cache_dir is not None and not Path(cache_dir).is_dir():
            raise FileNotFoundError(f"cache folder {cache_dir} does not exist; run the preprocessing first")
        self.samples = list(samples)
        self.phase = phase
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.base_dir = Path(base_dir)
        self.face_tracker = face_tracker
        self.max_audio_samples = max_audio_samples

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def ids(self) -> list[str]:
        return [s["id"] for s in self.samples]

    def _clip(self, sample: dict[str, Any]) -> Clip:
        sid = sample["id"]
        try:
            if self.cache_dir is not None:
                return load_cached(self.cache_dir, sid)
            return preprocess_sample(sample, self.base_dir, self.face_tracker)
        except (OSError, ValueError, DecodeError) as err:
            msg = str(err)
            prefix = f"sample {sid!r}"
            raise SampleError(msg if msg.startswith(prefix) else f"{prefix}: {msg}") from err

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        sid = sample["id"]
        clip = clip_for_phase(self._clip(sample), self.phase, self.max_audio_samples)
        need = PHASE_REQUIRED[self.phase]
        if need == "audio" and not clip.has_audio:
            raise SampleError(f"sample {sid!r}: phase {self.phase} trains on audio but the sample has none")
        if need == "video" and not clip.has_video:
            raise SampleError(f"sample {sid!r}: phase {self.phase} trains on video but the sample has none")
        return {"id": sid, "conversation": sample["conversations"], "clip": clip}
