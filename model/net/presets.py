"""Named model sizes: `tiny` (tests, random, seconds on CPU), `0.5b` and `7b` (published
architecture values of LLaVA-OneVision-0.5B / -7B, Whisper-large-v3, FaceXFormer Swin-B)."""
from __future__ import annotations

from model.net.config import QWEN2_7B, SIGLIP_SO400M, WHISPER_LARGE_V3, OmniEmotionConfig

# Public checkpoints each preset is composed from by `model.checkpoint.build --from-pretrained`.
HUB_SOURCES = {
    "0.5b": {"base": "llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "audio": "openai/whisper-large-v3"},
    "7b": {"base": "llava-hf/llava-onevision-qwen2-7b-ov-hf", "audio": "openai/whisper-large-v3"},
}

# Qwen2-0.5B's 151,936 rows + the two tokens LLaVA-OneVision's transformers conversion adds
# (<image> 151646, <video> 151647), padded up to a multiple of 64: the vocab_size of
# llava-hf/llava-onevision-qwen2-0.5b-ov-hf (the 7b preset's 152,128 follows the same rule).
QWEN2_05B = dict(
    vocab_size=152000,
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)

# Tiny: 8 frames × 4 visual + 1 newline, 8 × 4 face, 67 audio tokens for 4 s.
TINY_TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)
TINY_VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=14
)
TINY_AUDIO = dict(
    d_model=32,
    encoder_layers=1,
    encoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_layers=1,
    decoder_attention_heads=2,
    decoder_ffn_dim=64,
    num_mel_bins=128,
    max_source_positions=1500,
    vocab_size=51866,  # decoder-only field; kept valid for Whisper's token ids
)
TINY_FACE = dict(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=7, fuse_dim=16, pool_size=2)

PRESETS = ("tiny", "0.5b", "7b")


def preset_config(name: str, vocab_size: int | None = None, **overrides) -> OmniEmotionConfig:
    """The config of a preset. `vocab_size` overrides the decoder's (tiny: the tokenizer's
    size); other keyword arguments override top-level fields (e.g. `fusion=...`)."""
    if name == "tiny":
        text, vision, audio, face = TINY_TEXT, TINY_VISION, TINY_AUDIO, TINY_FACE
        overrides.setdefault("cross_attention_heads", 4)
    elif name == "0.5b":
        text, vision, audio, face = QWEN2_05B, SIGLIP_SO400M, WHISPER_LARGE_V3, {}
    elif name == "7b":
        text, vision, audio, face = QWEN2_7B, SIGLIP_SO400M, WHISPER_LARGE_V3, {}
    else:
        raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")
    text = dict(text)
    if vocab_size is not None:
        text["vocab_size"] = vocab_size
    return OmniEmotionConfig(
        base_config={
            "model_type": "llava_onevision",
            "vision_config": {"model_type": "siglip_vision_model", **vision},
            "text_config": {"model_type": "qwen2", **text},
            "vision_feature_layer": -1,
            "vision_feature_select_strategy": "full",
            "tie_word_embeddings": text["tie_word_embeddings"],
        },
        audio_config={"model_type": "whisper", **audio},
        face_config=dict(face),
        tie_word_embeddings=text["tie_word_embeddings"],
        **overrides,
    )
