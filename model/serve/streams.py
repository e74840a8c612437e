"""A stream's memory in an analyser, and a batch's frames encoded through it.

A stream: one continuous media stream (a `live.window.WindowAssembler` run, a pool's
multiplexed stream id). `OmniEmotionAnalyser` keeps one `StreamState` for its own use
and takes one per clip in `analyse_batch`, so a pool replica (`model.serve.pool`)
batches windows of several streams, each through its own cache.
"""
from __future__ import annotations

import time

import torch

from model.serve.features import CACHE_FRAMES, FrameFeatureCache

MEL_FRAMES_PER_S = 100.0  # Whisper's 10 ms mel hop


class StreamState:
    """One stream's memory in an analyser.

    cache: its `FrameFeatureCache` (bounded: `capacity` frames per branch).
    last_label, explained_at: the explanation policy's memory (`explain_every_s`).
    stats: windows, vision_frames_encoded, face_crops_encoded, audio_s_encoded (seconds
        of audio the Whisper encoder ran on).
    used_at: `time.monotonic()` of its last window (a pool drops idle streams' caches).
    """

    def __init__(self, model, id: object = None, capacity: int = CACHE_FRAMES):
        self.id = id
        self.cache = FrameFeatureCache(model, capacity)
        self.last_label: str | None = None
        self.explained_at: float | None = None
        self.stats = {"windows": 0, "vision_frames_encoded": 0, "face_crops_encoded": 0, "audio_s_encoded": 0.0}
        self.used_at = time.monotonic()


def stream_features(model, batch: dict, clips: list, frame_ids: list, streams: list[StreamState],
                    reuse: bool) -> dict:
    """``batch`` with, where ``reuse`` and the row's frame ids allow, the pixels replaced
    by per-frame features from the row's stream cache (`visual_embeds` (B, T, v, H),
    `face_embeds` (B, T, f, H)); rows without frame ids in such a batch are encoded
    whole, on their own. Counts each row's window, audio seconds and the frames and
    crops its encoders ran on in its stream's `stats`."""
    t = model.config.num_frames
    for clip, s in zip(clips, streams):
        s.stats["windows"] += 1
        s.used_at = time.monotonic()
        if "input_features" in batch and clip.has_audio:
            s.stats["audio_s_encoded"] += batch["input_features"].shape[-1] / MEL_FRAMES_PER_S
    use = [reuse and ids is not None for ids in frame_ids]
    if not any(use):  # the encoders see the pixels whole, inside the model
        for s in streams:
            s.stats["vision_frames_encoded"] += t if "pixel_values_videos" in batch else 0
            s.stats["face_crops_encoded"] += t if "face_pixel_values" in batch else 0
        return batch
    batch, inner = dict(batch), model.model
    with torch.inference_mode():
        if "pixel_values_videos" in batch:
            pixels, rows = batch.pop("pixel_values_videos"), []
            for i, s in enumerate(streams):
                before = s.cache.vision_frames_encoded
                rows.append(s.cache.visual(frame_ids[i], pixels[i]) if use[i] else inner.visual_features(pixels[i][None]))
                s.stats["vision_frames_encoded"] += s.cache.vision_frames_encoded - before if use[i] else t
            batch["visual_embeds"] = torch.cat(rows)
        if "face_pixel_values" in batch:
            pixels, rows = batch.pop("face_pixel_values"), []
            for i, s in enumerate(streams):
                before = s.cache.face_crops_encoded
                # the clip's own (T,) bool: what the processor stacked into the batch
                rows.append(s.cache.faces(frame_ids[i], clips[i].faces, clips[i].face_present, pixels[i]) if use[i]
                            else inner.face_features(pixels[i][None]))
                s.stats["face_crops_encoded"] += s.cache.face_crops_encoded - before if use[i] else t
            batch["face_embeds"] = torch.cat(rows)
    return batch
