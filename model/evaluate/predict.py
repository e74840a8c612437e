"""Batched generation over a manifest (the `predict` step of `python -m model.evaluate`).

Each sample's own instruction (its first user turn) is answered with every modality the
sample has; the answers go to a JSONL file of {"id", "text"} lines, in manifest order.
A sample whose media cannot be decoded raises with its id: predictions are never
silently skipped or replaced.
"""
from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from model.data.manifest import read_manifest
from model.data.preprocess import DecodeError, load_cached, preprocess_sample
from live.contract.media import Clip
from model.serve.generate import EVAL_MAX_NEW_TOKENS, encode, generate


def _clip(sample: dict, base_dir: Path, cache_dir: Path | None) -> Clip:
    if cache_dir is not None:
        return load_cached(cache_dir, sample["id"])
    try:
        return preprocess_sample(sample, base_dir)
    except DecodeError as err:
        raise ValueError(f"sample {sample['id']!r}: {err}") from None


def predict_manifest(
    model_dir: str | Path,
    manifest: str | Path,
    out_path: str | Path,
    batch_size: int = 4,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    max_new_tokens: int = EVAL_MAX_NEW_TOKENS,
) -> int:
    """Generate an answer per manifest sample; returns how many were generated.

    Args:
        model_dir: Omni-Emotion checkpoint folder.
        manifest: JSONL manifest (media paths relative to its folder).
        out_path: predictions JSONL to write ({"id", "text"} per line).
        batch_size: samples per `generate` call (samples with and without video are
            batched separately, since a batch shares its modalities).
        device: "auto" (a GPU if any), "cpu", "cuda", "cuda:N".
        cache_dir: a preprocessing cache (`model.data.preprocess`) to read media from
            (`--cache`); None decodes every sample's media.
        max_new_tokens: generation budget per answer (`--max-new-tokens`).
    """
    from model.checkpoint.loading import load

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
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
            batch = encode(model, processor, [s["conversations"][0]["content"] for s in chunk], clips)
            for s, answer in zip(chunk, generate(model, processor, batch, max_new_tokens)):
                answers[s["id"]] = answer.text
            bar.update(len(chunk))
    bar.close()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w") as f:
        for s in samples:
            f.write(json.dumps({"id": s["id"], "text": answers[s["id"]]}) + "\n")
    return len(answers)
