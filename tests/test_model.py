"""Omni-Emotion model core, ModelTester style: tiny sub-configs, exact placeholder counts."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from transformers import TextIteratorStreamer

from model.net import tokens
from model.checkpoint.loading import build_tiny, count_parameters, load, save
from model.net.modeling import PHASE_TRAINABLE
from model.net.presets import preset_config
from model.net.processor import Clip

T = 8  # frames per clip
SECONDS = 4.0
RNG = np.random.default_rng(0)


class ModelTester:
    """Builds tiny models and matching inputs; counts placeholders in a batch."""

    def __init__(self, fusion: str = "video_concat", **overrides):
        self.model, self.processor = build_tiny(fusion=fusion, **overrides)
        self.config = self.model.config

    def clip(self, frames=True, faces=True, audio=True, n_frames=T, seconds=SECONDS, face_present=None):
        return Clip(
            frames=RNG.integers(0, 256, (n_frames, 90, 120, 3), dtype=np.uint8) if frames else None,
            faces=RNG.integers(0, 256, (n_frames, 224, 224, 3), dtype=np.uint8) if faces else None,
            face_present=face_present,
            audio=(RNG.standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32) if audio else None,
        )

    def placeholder_counts(self, input_ids):
        c = self.config
        return {
            "video": int((input_ids == c.video_token_id).sum()),
            "face": int((input_ids == c.face_token_id).sum()),
            "audio": int((input_ids == c.audio_token_id).sum()),
        }


CHAT = [{"role": "user", "content": "What emotion does the person show?"}]
CHAT_ANSWER = CHAT + [{"role": "assistant", "content": "happy. The person smiles."}]


@pytest.fixture(scope="module")
def tester():
    return ModelTester()


# ---- token counts ---------------------------------------------------------------------


def test_token_counts_match_the_paper():
    cfg = preset_config("7b")
    assert tokens.visual_tokens_per_frame(cfg) == 196  # 27×27 SigLIP patches pooled 2×2
    assert tokens.visual_token_count(cfg) == 8 * 196 + 1
    assert tokens.face_tokens_per_frame(cfg) == 49  # 7×7 pooled FaceXFormer map
    assert tokens.audio_tokens_total(cfg) == 500  # 1500 Whisper states / 3
    assert tokens.audio_token_count(cfg, 4 * 16000) == 67
    assert tokens.audio_token_count(cfg, 30 * 16000) == 500
    assert tokens.audio_token_count(cfg, None) == 67  # absent track: 4 s of zeros
    cfg.trim_audio = False
    assert tokens.audio_token_count(cfg, 4 * 16000) == 500
    with pytest.raises(ValueError, match="num_samples"):
        cfg.trim_audio = True
        tokens.audio_token_count(cfg, 0)


def test_config_rejects_unknown_fusion():
    with pytest.raises(ValueError, match="fusion must be one of"):
        preset_config("tiny", fusion="sum")


# ---- processor ------------------------------------------------------------------------


def test_processor_places_exact_placeholder_counts(tester):
    clip = tester.clip(seconds=2.5)
    batch = tester.processor(CHAT, clip)
    # Tiny preset, worked out by hand (not with model.net.tokens, which the processor uses):
    # video: 8 frames × (56 px / 14 px = 4×4 patches, pooled 2×2 → 4) + 1 newline = 33;
    # face: 8 frames × 2×2 pooled map = 32; audio: 2.5 s = 40000 samples / 160 (mel hop)
    # = 250 mel frames / 2 (conv stride) = 125 states / 3 (pool stride) → ceil = 42.
    assert tester.placeholder_counts(batch["input_ids"]) == {"video": 33, "face": 32, "audio": 42}
    assert batch["pixel_values_videos"].shape == (1, T, 3, 56, 56)
    assert batch["face_pixel_values"].shape == (1, T, 3, 224, 224)
    assert batch["input_features"].shape == (1, 128, 3000)
    assert batch["audio_lengths"].tolist() == [40000]
    ids = batch["input_ids"][0].tolist()
    c = tester.config
    # Wrappers in order around the modality block.
    order = [ids.index(i) for i in (c.vi_start_token_id, c.vi_end_token_id, c.au_start_token_id, c.au_end_token_id)]
    assert order == sorted(order)


def test_processor_takes_the_sampled_frames_as_given(tester):
    # the frames were already chosen by live.contract.media.sample_frames: no second sampling
    frames = np.stack([np.full((20, 20, 3), 10 * i, dtype=np.uint8) for i in range(T)])
    batch = tester.processor(CHAT, Clip(frames=frames))
    firsts = batch["pixel_values_videos"][0, :, 0, 0, 0]  # normalised (v/255 - .5)/.5
    values = ((firsts * 0.5 + 0.5) * 255).round().int().tolist()
    assert values == [0, 10, 20, 30, 40, 50, 60, 70]
    with pytest.raises(ValueError, match="40 frames but the model takes exactly 8"):
        tester.processor(CHAT, Clip(frames=np.zeros((40, 20, 20, 3), np.uint8)))


@pytest.mark.parametrize(
    "clip_kwargs, sampling_rate, message",
    [
        (dict(audio=np.zeros(16000, np.float32)), 48000, "16000 Hz"),
        (dict(audio=np.zeros(0, np.float32)), 16000, "empty"),
        (dict(audio=np.zeros((2, 100), np.float32)), 16000, "mono"),
        (dict(audio=np.zeros(100, np.int16)), 16000, "float"),
        (dict(audio=np.full(100, np.nan, np.float32)), 16000, "NaN"),
        (dict(audio=np.zeros(31 * 16000, np.float32)), 16000, "at most 30 s"),
        (dict(frames=np.zeros((8, 10, 10), np.uint8)), 16000, r"\(T, H, W, 3\)"),
        (dict(frames=np.zeros((8, 10, 10, 3), np.float32)), 16000, "uint8"),
        (dict(frames=np.zeros((0, 10, 10, 3), np.uint8)), 16000, "empty"),
        (dict(frames=np.zeros((8, 10, 10, 3), np.uint8), faces=np.zeros((5, 224, 224, 3), np.uint8)), 16000, "5 crops"),
    ],
)
def test_processor_rejects_bad_media(tester, clip_kwargs, sampling_rate, message):
    with pytest.raises(ValueError, match=message):
        tester.processor(CHAT, Clip(**clip_kwargs), sampling_rate=sampling_rate)


def test_labels_mask_everything_but_the_answer(tester):
    batch = tester.processor([CHAT_ANSWER], [tester.clip()], return_labels=True, padding_side="right")
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    kept = labels != -100
    answer = tester.processor.tokenizer.decode(ids[kept])
    assert answer.startswith("happy. The person smiles.")
    assert kept.sum() < 20 and not kept[: len(ids) // 2].any()


# ---- forward --------------------------------------------------------------------------


@pytest.mark.parametrize("fusion", ["video_concat", "frame_concat", "cross_attention"])
def test_forward_all_fusions(fusion):
    t = ModelTester(fusion)
    mask = np.ones(T, bool)
    mask[:2] = False
    batch = t.processor([CHAT_ANSWER] * 2, [t.clip(face_present=mask), t.clip(seconds=1.0)], return_labels=True)
    out = t.model(**batch)
    assert out.logits.shape == (*batch["input_ids"].shape, t.config.text_config.vocab_size)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert t.model.model.face_projector.linear_1.weight.grad.abs().sum() > 0
    assert t.model.model.audio_projector.linear_1.weight.grad.abs().sum() > 0


def test_frame_concat_interleaves_frames():
    t = ModelTester("frame_concat")
    ids = t.processor(CHAT, t.clip())["input_ids"][0]
    c = t.config
    kinds = [("v" if i == c.video_token_id else "f") for i in ids.tolist() if i in (c.video_token_id, c.face_token_id)]
    v, f = tokens.visual_tokens_per_frame(c), tokens.face_tokens_per_frame(c)
    assert "".join(kinds) == ("v" * v + "f" * f) * T + "v"


@pytest.mark.parametrize(
    "present", [dict(frames=False), dict(faces=False), dict(audio=False), dict(frames=False, faces=False, audio=False)]
)
def test_missing_modalities_keep_the_layout(tester, present):
    full = tester.processor(CHAT, tester.clip())
    partial = tester.processor(CHAT, tester.clip(**present))
    assert torch.equal(full["input_ids"], partial["input_ids"])  # 4 s audio == absent audio
    with torch.no_grad():
        out = tester.model(**partial)
    assert torch.isfinite(out.logits).all()


def test_missing_modality_is_a_zero_tensor(tester):
    batch = tester.processor(CHAT, tester.clip(faces=False, audio=False))
    with torch.no_grad():
        embeds = tester.model.model.merge_multimodal(
            batch["input_ids"], batch.get("pixel_values_videos"), None, None, None, batch["audio_lengths"]
        )
    c = tester.config
    for token_id in (c.face_token_id, c.audio_token_id):
        assert embeds[batch["input_ids"] == token_id].abs().max() == 0
    assert embeds[batch["input_ids"] == c.video_token_id].abs().max() > 0


def test_frames_without_face_get_zeros(tester):
    mask = np.zeros(T, bool)
    mask[4:] = True
    batch = tester.processor(CHAT, tester.clip(face_present=mask))
    with torch.no_grad():
        embeds = tester.model.model.merge_multimodal(**{k: v for k, v in batch.items() if k != "attention_mask"})
    face_rows = embeds[batch["input_ids"] == tester.config.face_token_id].view(T, -1)
    present = batch["face_present"][0]
    assert (face_rows[~present].abs().sum(-1) == 0).all()
    assert (face_rows[present].abs().sum(-1) > 0).all()


def test_placeholder_mismatch_raises_with_both_counts(tester):
    batch = tester.processor(CHAT, tester.clip())
    ids = batch["input_ids"].clone()
    first_face = (ids[0] == tester.config.face_token_id).nonzero()[0, 0]
    ids[0, first_face] = tester.processor.tokenizer.pad_token_id
    n = tokens.face_token_count(tester.config)
    with pytest.raises(ValueError, match=rf"face: {n - 1} placeholder tokens .* but {n} feature rows"):
        tester.model(**{**batch, "input_ids": ids})


# ---- persistence ----------------------------------------------------------------------


def test_save_load_round_trip_gives_identical_logits(tester, tmp_path):
    save(tester.model, tester.processor, tmp_path)
    model2, proc2 = load(tmp_path)
    clip = tester.clip()
    b1, b2 = tester.processor(CHAT, clip), proc2(CHAT, clip)
    assert torch.equal(b1["input_ids"], b2["input_ids"])
    with torch.no_grad():
        assert torch.equal(tester.model(**b1).logits, model2(**b2).logits)
    assert type(proc2.tokenizer).__name__ in ("TokenizersBackend", "PreTrainedTokenizerFast")
    assert proc2.tokenizer.is_fast
    # Special tokens survive as single, special tokens.
    for tok in ("<vi_start>", "<vi_end>", "<au_start>", "<au_end>", "<face>", "<audio>", "<video>"):
        assert len(proc2.tokenizer(tok, add_special_tokens=False)["input_ids"]) == 1
        assert tok in proc2.tokenizer.all_special_tokens or tok in proc2.tokenizer.added_tokens_encoder


def test_load_missing_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        load(tmp_path / "nope")


# ---- training phases ------------------------------------------------------------------


@pytest.mark.parametrize("phase", [1, 2, 3])
def test_phase_freezing(phase):
    t = ModelTester("cross_attention")
    names = set(t.model.set_trainable_phase(phase))
    trainable = {n for n, p in t.model.named_parameters() if p.requires_grad}
    assert names == trainable
    prefixes = PHASE_TRAINABLE[phase]
    for n, _ in t.model.named_parameters():
        assert (n in trainable) == any(n.startswith(p) for p in prefixes), n
    if phase == 1:
        assert trainable == {n for n, _ in t.model.model.audio_projector.named_parameters(prefix="model.audio_projector")}
    if phase == 3:
        assert not any(n.startswith(("model.vision_tower", "model.audio_encoder", "model.face_encoder")) for n in trainable)
        assert any(n.startswith("model.language_model.layers") for n in trainable)
    with pytest.raises(ValueError, match="phase must be one of"):
        t.model.set_trainable_phase(4)


# ---- generation -----------------------------------------------------------------------


def test_generate_streams_text_with_every_modality_subset(tester):
    for present in (dict(), dict(frames=False), dict(faces=False, audio=False), dict(frames=False, faces=False)):
        batch = tester.processor(CHAT, tester.clip(**present))
        streamer = TextIteratorStreamer(tester.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        result = {}

        def run():
            with torch.no_grad():
                result["ids"] = tester.model.generate(**batch, max_new_tokens=6, do_sample=False, streamer=streamer)

        worker = threading.Thread(target=run)
        worker.start()
        pieces = list(streamer)
        worker.join()
        new = result["ids"][0, batch["input_ids"].shape[1] :]
        assert len(new) >= 1
        assert "".join(pieces) == tester.processor.decode(new)


def test_generate_matches_full_forward_greedy(tester):
    """Decode steps (with cache, no media) agree with re-running the whole sequence."""
    batch = tester.processor(CHAT, tester.clip())
    with torch.no_grad():
        ids = tester.model.generate(**batch, max_new_tokens=4, do_sample=False)
        full = {**batch, "input_ids": ids[:, :-1], "attention_mask": torch.ones_like(ids[:, :-1])}
        logits = tester.model(**full).logits
    n = batch["input_ids"].shape[1]
    assert torch.equal(logits[0, n - 1 :].argmax(-1), ids[0, n:])


def test_parameter_counts_split_by_component(tester):
    """Each component counts exactly its own modules, and together they cover the model."""
    counts = count_parameters(tester.model)
    m = tester.model.model

    def size(*parts):  # modules or bare parameters
        return sum(p.numel() for part in parts
                   for p in (part.parameters() if isinstance(part, torch.nn.Module) else [part]))

    expected = {
        "llm": size(m.language_model, tester.model.lm_head),  # tiny: embeddings not tied
        "vision": size(m.vision_tower),
        "audio": size(m.audio_encoder),
        "face": size(m.face_encoder),
        "projectors": size(m.multi_modal_projector, m.audio_projector, m.face_projector,
                           m.frame_embeddings, m.image_newline),  # video_concat: no fusion module
    }
    assert {k: counts[k] for k in expected} == expected
    assert counts["total"] == sum(expected.values()) == sum(p.numel() for p in tester.model.parameters())


@pytest.mark.parametrize("layer", [-1, -2, 0, [-2, -1]])
def test_vision_states_equal_output_hidden_states(tester, layer):
    """The hooked SigLIP state is exactly the one `output_hidden_states` would give,
    for the last layer, an earlier one, the embeddings and a concatenation."""
    inner = tester.model.model if hasattr(tester.model, "model") else tester.model
    frames = torch.randn(3, 3, tester.config.vision_config.image_size, tester.config.vision_config.image_size)
    with torch.no_grad():
        every = inner.vision_tower(frames, output_hidden_states=True, return_dict=True).hidden_states
        want = every[layer] if isinstance(layer, int) else torch.cat([every[i] for i in layer], -1)
        got = inner.vision_states(frames, layer)
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="outside SigLIP"):
        inner.vision_states(frames, len(every))
