"""Per-frame encoder reuse for serving: every frame and face crop encoded once.

`FrameFeatureCache` keeps each frame's visual features and each face crop's features
keyed by the frame's identity in its source, and hands the model the (1, T, v, H) /
(1, T, f, H) rows it would have computed (`visual_embeds` / `face_embeds`); the
per-slot parts are applied after the cache, inside the model. Exact, and why: docs/model.md
"Streaming cost".

The cache is bounded (`capacity` entries per branch, least recently used dropped). One
cache per stream: `model.serve.streams.StreamState` holds it (the single-process analyser
keeps one and starts a new one on a new stream id; a pool replica keeps one per stream it
serves, `model.serve.pool`).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

import numpy as np
import torch

from live.contract.media import N_FRAMES
from model.net import tokens

# Entries kept per branch: two windows' worth covers every overlap of a sliding window
# (a window shares at most T frames with the one before it). At 7B size one visual
# entry is 196 × 3584 values (1.4 MB in bf16), so 16 entries stay ~22 MB.
CACHE_FRAMES = 2 * N_FRAMES


def crop_digest(crop: np.ndarray) -> bytes:
    """A face crop's identity: (224, 224, 3) uint8 → 16-byte digest of its pixels (the
    window's face and box decide the crop, so the same frame can give different crops)."""
    return hashlib.blake2b(np.ascontiguousarray(crop).tobytes(), digest_size=16).digest()


class _LRU:
    def __init__(self, capacity: int):
        self.capacity, self.rows = capacity, OrderedDict()

    def lookup(self, keys: Sequence[Hashable], pixels: torch.Tensor,
               encode: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, int]:
        """keys (T,), pixels (T, 3, S, S) → ((1, T, n, H) features, frames encoded now)."""
        missing: dict[Hashable, int] = {}
        for i, k in enumerate(keys):
            if k not in self.rows and k not in missing:
                missing[k] = i
        fresh = {}
        if missing:
            feats = encode(pixels[list(missing.values())][None])[0]  # (n_missing, n, H)
            fresh = dict(zip(missing, feats))
        out = torch.stack([fresh[k] if k in fresh else self.rows[k] for k in keys])[None]
        for k in keys:
            if k in fresh:
                self.rows[k] = fresh[k]
            self.rows.move_to_end(k)
        while len(self.rows) > self.capacity:
            self.rows.popitem(last=False)
        return out, len(missing)


class FrameFeatureCache:
    """Visual and face features per frame, for one stream.

    Counters (since the last `reset`): ``vision_frames_encoded``, ``face_crops_encoded``.
    """

    def __init__(self, model, capacity: int = CACHE_FRAMES):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.inner = model.model  # OmniEmotionModel: visual_features, face_features
        self.capacity = capacity
        self.reset()

    def reset(self) -> None:
        self._visual, self._face = _LRU(self.capacity), _LRU(self.capacity)
        self.vision_frames_encoded = 0
        self.face_crops_encoded = 0

    def __len__(self) -> int:
        return len(self._visual.rows) + len(self._face.rows)

    def visual(self, frame_ids: Sequence[Hashable], pixels: torch.Tensor) -> torch.Tensor:
        """frame_ids (T,) identities in the source; pixels (T, 3, S, S) → (1, T, v, H)."""
        out, n = self._visual.lookup(list(frame_ids), pixels, self.inner.visual_features)
        self.vision_frames_encoded += n
        return out

    def faces(self, frame_ids: Sequence[Hashable], crops: np.ndarray, present: np.ndarray,
              pixels: torch.Tensor) -> torch.Tensor:
        """crops (T, 224, 224, 3) uint8 with present (T,) bool; pixels (T, 3, 224, 224)
        → (1, T, f, H). Frames without a face get zero rows without being encoded: the
        model multiplies them by face_present = 0 whatever they hold."""
        idx = [i for i in range(len(frame_ids)) if present[i]]
        if not idx:  # no face in the window: nothing to encode or keep
            cfg = self.inner.config
            return pixels.new_zeros(1, len(frame_ids), tokens.face_tokens_per_frame(cfg), cfg.hidden_size)
        keys = [(frame_ids[i], crop_digest(crops[i])) for i in idx]
        got, n = self._face.lookup(keys, pixels[idx], self.inner.face_features)
        self.face_crops_encoded += n
        out = got.new_zeros(1, len(frame_ids), *got.shape[2:])
        out[0, idx] = got[0]
        return out
