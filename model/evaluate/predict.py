"""Batched generation over a manifest (the `predict` step of `python -m model.evaluate`).

Each sample's own instruction (its first user turn) is answered with every modality the
sample has; the answers go to a JSONL file of {"id", "text"} lines, in manifest order.
A sample whose media cannot be decoded raises with its id: predictions are never
silently skipped or replaced.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm import tqdm

from model.data.manifest import read_manifest
from model.data.preprocess import DecodeError, clip_arrays, default_face_cropper, load_cached, preprocess_sample
from model.net.processor import Clip

MAX_NEW_TOKENS = 256  # the phase-3 answers are a paragraph and a label list


def _clip(sample: dict, base_dir: Path, cache_dir: Path | None) -> Clip:
    if cache_dir is not None:
        return Clip(**load_cached(cache_dir, sample["id"]))
    try:
        return Clip(**clip_arrays(preprocess_sample(sample, base_dir, default_face_cropper)))
    except DecodeError as err:
        raise ValueError(f"sample {sample['id']!r}: {err}") from None


def predict_manifest(
    model_dir: str | Path,
    manifest: str | Path,
    out_path: str | Path,
    batch_size: int = 4,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> int:
    """Generate an answer per manifest sample; returns how many were generated.

    Args:
        model_dir: Omni-Emotion checkpoint folder.
        manifest: JSONL manifest (media paths relative to its folder).
        out_path: predictions JSONL to write ({"id", "text"} per line).
        batch_size: samples per `generate` call (samples with and without video are
            batched separately, since a batch shares its modalities).
        cache_dir: a preprocessing cache (`model.data.preprocess`) to read media from.
    """
    from model.checkpoint.loading import load

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    manifest = Path(manifest)
    samples = read_manifest(manifest)
    model, processor = load(model_dir, device=device)
    cache = Path(cache_dir) if cache_dir is not None else None
    answers: dict[str, str] = {}
    groups = {True: [], False: []}
    for s in samples:
        groups[s.get("video") is not None].append(s)
    bar = tqdm(total=len(samples), desc="predict", unit="sample")
    for group in groups.values():
        for i in range(0, len(group), batch_size):
            chunk = group[i : i + batch_size]
            clips = [_clip(s, manifest.parent, cache) for s in chunk]
            chats = [[{"role": "user", "content": s["conversations"][0]["content"]}] for s in chunk]
            batch = processor(chats, clips, padding_side="left").to(model.device)
            with torch.inference_mode():
                out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=processor.tokenizer.pad_token_id)
            prompt_len = batch["input_ids"].shape[1]
            for s, row in zip(chunk, out):
                answers[s["id"]] = processor.decode(row[prompt_len:]).strip()
            bar.update(len(chunk))
    bar.close()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w") as f:
        for s in samples:
            f.write(json.dumps({"id": s["id"], "text": answers[s["id"]]}) + "\n")
    return len(answers)
