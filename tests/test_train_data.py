"""Training data path: dataset (manifest + preprocessing cache) and collator.

`make_synthetic_set` is shared by the other training tests: random frames, face crops
and noise audio written straight into the preprocessing cache format, so no video is
decoded and no face detector runs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.net import tokens
from model.train.collator import TrainCollator
from model.data.manifest import make_sample, read_manifest, write_manifest
from model.data.preprocess import cache_path
from model.train.dataset import SampleError, TrainDataset
from model.net.processor import IGNORE_INDEX


def dataset_of(manifest: Path, phase: int, cache_dir=None) -> TrainDataset:
    """The trainer's way: the manifest read and validated, media resolved against its folder."""
    return TrainDataset(read_manifest(manifest), phase, cache_dir=cache_dir, base_dir=Path(manifest).parent)


ANSWERS = ("happy.", "sad.", "angry.", "neutral.")
QUESTION = "Which emotion does the person show?"
FRAME_SIDE = 32  # px; the tiny vision tower resizes to 56 anyway
AUDIO_SECONDS = (1.0, 2.0, 1.5, 0.5)  # different lengths → different audio token counts


def write_cached_sample(cache: Path, sid: str, rng, video: bool = True, audio_s: float | None = 1.0, faces=True):
    """One sample in `model/data/preprocess.py`'s npz format."""
    present = np.ones(8, bool) if video else np.zeros(8, bool)
    if video:
        present[-2:] = False  # some frames without a face
    audio = (rng.standard_normal(int(audio_s * 16000)) * 0.1).astype(np.float32) if audio_s else np.zeros(0, np.float32)
    np.savez(
        cache_path(cache, sid),
        frames=rng.integers(0, 256, (8, FRAME_SIDE, FRAME_SIDE, 3), dtype=np.uint8) if video
        else np.zeros((0, 0, 0, 3), np.uint8),
        faces=rng.integers(0, 256, (8, 224, 224, 3), dtype=np.uint8) * present[:, None, None, None],
        face_present=present,
        audio=audio,
        has_video=np.array(video),
        has_audio=np.array(audio.size > 0),
    )


def make_synthetic_set(root: Path, n: int = 4, seed: int = 0) -> tuple[Path, Path]:
    """`n` samples (frames + faces + audio) → (manifest path, cache folder)."""
    root.mkdir(parents=True, exist_ok=True)
    cache = root / "cache"
    cache.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        sid = f"syn/{i:03d}"
        samples.append(make_sample(sid, "emotion_cls", QUESTION, ANSWERS[i % len(ANSWERS)], video=f"videos/{i}.mp4"))
        write_cached_sample(cache, sid, rng, audio_s=AUDIO_SECONDS[i % len(AUDIO_SECONDS)])
    manifest = root / "train.jsonl"
    write_manifest(samples, manifest)
    return manifest, cache


@pytest.fixture(scope="module")
def tiny():
    from model.checkpoint.loading import build_tiny

    return build_tiny()


@pytest.fixture()
def synthetic(tmp_path):
    return make_synthetic_set(tmp_path / "data")


@pytest.mark.parametrize("phase,video,audio", [(1, False, True), (2, True, False), (3, True, True)])
def test_dataset_keeps_only_the_phase_modalities(synthetic, phase, video, audio):
    manifest, cache = synthetic
    ds = dataset_of(manifest, phase, cache_dir=cache)
    assert len(ds) == 4 and ds.ids[0] == "syn/000"
    item = ds[1]
    assert item["id"] == "syn/001"
    assert item["conversation"][-1] == {"role": "assistant", "content": "sad."}
    clip = item["clip"]
    # one form of absence: flags + zeros of the documented shape, never None
    assert clip.has_video == video and clip.has_audio == audio
    assert clip.faces.shape == (8, 224, 224, 3) and clip.face_present.shape == (8,)
    if video:
        assert clip.frames.shape == (8, FRAME_SIDE, FRAME_SIDE, 3)
        assert clip.face_present.tolist() == [True] * 6 + [False] * 2
    else:
        assert clip.frames.shape[0] == 0 and not clip.face_present.any() and clip.faces.max() == 0
    if not audio:
        assert clip.audio.shape == (0,)


def test_missing_cache_entry_raises_with_the_sample_id(synthetic):
    manifest, cache = synthetic
    cache_path(cache, "syn/002").unlink()
    ds = dataset_of(manifest, 3, cache_dir=cache)
    ds[1]  # neighbours still load
    with pytest.raises(SampleError, match="syn/002"):
        ds[2]


def test_sample_without_the_phase_modality_raises(tmp_path, synthetic):
    manifest, cache = synthetic
    rng = np.random.default_rng(1)
    write_cached_sample(cache, "syn/001", rng, video=True, audio_s=None)  # no audio now
    with pytest.raises(SampleError, match="syn/001.*audio"):
        dataset_of(manifest, 1, cache_dir=cache)[1]
    write_cached_sample(cache, "syn/003", rng, video=False, audio_s=1.0)  # audio only
    with pytest.raises(SampleError, match="syn/003.*video"):
        dataset_of(manifest, 2, cache_dir=cache)[3]


def test_long_audio_is_cut_to_the_encoder_window(tmp_path):
    cache = tmp_path / "c"
    cache.mkdir()
    write_cached_sample(cache, "long", np.random.default_rng(0), audio_s=40.0)
    ds = TrainDataset([make_sample("long", "asr", "Transcribe.", "Hello.", video=None, audio="a.wav")], 1, cache, max_audio_samples=30 * 16000)
    assert ds[0]["clip"].audio.shape == (30 * 16000,)


def test_collator_pads_right_masks_prompt_and_counts_placeholders(synthetic, tiny):
    model, processor = tiny
    cfg = model.config
    manifest, cache = synthetic
    ds = dataset_of(manifest, 3, cache_dir=cache)
    items = [ds[0], ds[1], ds[3]]
    batch = TrainCollator(processor)(items)
    ids, att, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.shape == att.shape == labels.shape and ids.shape[0] == 3
    tok = processor.tokenizer
    for row, item in enumerate(items):
        n = int(att[row].sum())
        assert att[row, :n].all() and not att[row, n:].any(), "right padding"
        assert (labels[row, n:] == IGNORE_INDEX).all()
        supervised = ids[row][labels[row] != IGNORE_INDEX]
        text = tok.decode(supervised)
        assert text.startswith(item["conversation"][-1]["content"]), text
        # everything before the answer, placeholders included, carries no loss
        first = int((labels[row] != IGNORE_INDEX).nonzero()[0])
        assert (labels[row, :first] == IGNORE_INDEX).all()
        assert (labels[row, first:n] == ids[row, first:n]).all()
        # exact placeholder counts from model/net/tokens.py
        samples = item["clip"].audio.shape[0]
        assert int((ids[row] == cfg.audio_token_id).sum()) == tokens.audio_token_count(cfg, samples)
        assert int((ids[row] == cfg.video_token_id).sum()) == tokens.visual_token_count(cfg)
        assert int((ids[row] == cfg.face_token_id).sum()) == tokens.face_token_count(cfg)
    assert batch["pixel_values_videos"].shape[:2] == (3, cfg.num_frames)
    assert batch["face_present"].shape == (3, cfg.num_frames)
    assert batch["audio_lengths"].tolist() == [16000, 32000, 8000]
    out = model(**batch)
    assert out.loss is not None and out.loss.isfinite()


def test_collator_names_the_bad_sample(synthetic, tiny):
    _, processor = tiny
    manifest, cache = synthetic
    ds = dataset_of(manifest, 3, cache_dir=cache)
    bad = ds[2]
    bad["clip"].audio = np.full(1000, np.nan, np.float32)
    with pytest.raises(SampleError, match="syn/002.*NaN"):
        TrainCollator(processor)([ds[0], bad])
