"""Configuration of the Omni-Emotion model (paper §4), composed of sub-configs.

    OmniEmotionConfig
    ├── base_config   LlavaOnevisionConfig (SigLIP vision tower + projector + Qwen2 decoder)
    ├── audio_config  WhisperConfig (only the encoder is built)
    └── face_config   FaceEncoderConfig (FaceXFormer: Swin + multi-scale MLP fusion + pooling)

Every default is the paper's production value (LLaVA-OneVision-7B, Whisper-large-v3,
FaceXFormer Swin-B); the `tiny` preset in `model/net/presets.py` shrinks them for tests.
"""
from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from live.contract.media import CROP_SIZE, N_FRAMES
from model.net.templates import ANSWER_FORMATS

FUSIONS = ("video_concat", "frame_concat", "cross_attention")
# What the Whisper encoder sees: the paper's padded 30 s, or the window's own length.
AUDIO_CONTEXTS = ("30s", "window")


# LLaVA-OneVision-7B (llava-hf/llava-onevision-qwen2-7b-ov-hf): Qwen2-7B decoder.
QWEN2_7B = dict(
    vocab_size=152128,
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)
# SigLIP-so400m/14 at 384 px, last layer dropped as in LLaVA-OneVision (26 of 27 layers).
SIGLIP_SO400M = dict(
    hidden_size=1152,
    intermediate_size=4304,
    num_hidden_layers=26,
    num_attention_heads=16,
    image_size=384,
    patch_size=14,
    vision_use_head=False,
)
# Whisper-large-v3 encoder: 128 mel bins, 30 s → 3000 mel frames → 1500 states of 1280.
WHISPER_LARGE_V3 = dict(
    d_model=1280,
    encoder_layers=32,
    encoder_attention_heads=20,
    encoder_ffn_dim=5120,
    decoder_layers=32,
    decoder_attention_heads=20,
    decoder_ffn_dim=5120,
    num_mel_bins=128,
    max_source_positions=1500,
    vocab_size=51866,
)
LLAVA_OV_IMAGE_TOKEN_ID = 151646
LLAVA_OV_VIDEO_TOKEN_ID = 151647


class FaceEncoderConfig(PreTrainedConfig):
    """FaceXFormer's encoder: a Swin backbone whose four stage outputs are each projected
    to `fuse_dim`, resized to the stage-1 grid (56×56 at 224 px), concatenated deepest
    first and fused by a bias-free 1×1 conv; then average-pooled to `pool_size`².

    The pooling is ours: 56×56 = 3136 tokens per frame is far too many for the LLM.
    """

    model_type = "omni_emotion_face"

    image_size: int = CROP_SIZE
    patch_size: int = 4
    embed_dim: int = 128  # Swin-B
    depths: list[int] | tuple[int, ...] = (2, 2, 18, 2)
    num_heads: list[int] | tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 7
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-5
    fuse_dim: int = 256
    pool_size: int = 7  # tokens per frame = pool_size ** 2
    image_mean: list[float] | tuple[float, ...] = (0.485, 0.456, 0.406)  # ImageNet
    image_std: list[float] | tuple[float, ...] = (0.229, 0.224, 0.225)

    @property
    def stage_dims(self) -> list[int]:
        return [self.embed_dim * 2**i for i in range(len(self.depths))]


class OmniEmotionConfig(PreTrainedConfig):
    """The whole model. Token ids of the placeholders and wrappers are filled in when the
    tokenizer is built (`model/net/tokenizer.py`), so a checkpoint carries them.

    Args:
        fusion: how face tokens join the visual tokens (paper Fig. 6): `video_concat`
            (default, (c)), `frame_concat` ((a)) or `cross_attention` ((b)).
        num_frames: frames per clip (8, `live.contract.media.N_FRAMES`), each with a learnable
            position embedding; the processor takes exactly this many.
        audio_pool_stride: average-pool stride over Whisper states (3 → ≈60 ms/token).
        trim_audio: keep only the audio tokens that cover real audio instead of all 500
            of the padded 30 s (a 4 s window → 67 tokens). On for live use.
        absent_audio_seconds: with `trim_audio`, the length whose token count a missing
            audio track fills with zeros, so the layout of a live window never changes.
        cross_attention_heads: heads of the `cross_attention` fusion layer.
        audio_context: `"30s"` (default, the paper: every clip padded to Whisper's 30 s)
            or `"window"`: the encoder runs on the clip's own length with its position
            embeddings sliced to it (4 s → 67 tokens either way, 7.5× less encoder work).
            The processor, the trainer's collator, evaluation and serving all read it,
            so a model is served with the context it was trained with.
        answer_format: phase-3 answer order, `"explanation_first"` (default, the paper:
            "<explanation> Open-vocabulary labels: a, b.") or `"labels_first"`
            ("Open-vocabulary labels: a, b. <explanation>"): the trainer renders targets
            in it and the analyser can stop once the labels are out.
    """

    model_type = "omni_emotion"
    sub_configs_defaults = {
        "base_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="llava_onevision",
            init_kwargs={
                "vision_config": {"model_type": "siglip_vision_model", **SIGLIP_SO400M},
                "text_config": {"model_type": "qwen2", **QWEN2_7B},
                "image_token_index": LLAVA_OV_IMAGE_TOKEN_ID,
                "video_token_index": LLAVA_OV_VIDEO_TOKEN_ID,
            },
        ),
        "audio_config": SubConfigSpec(config_class=AutoConfig, model_type="whisper", init_kwargs=WHISPER_LARGE_V3),
        "face_config": SubConfigSpec(config_class=FaceEncoderConfig),
    }

    base_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    face_config: dict | PreTrainedConfig | None = None
    fusion: str = "video_concat"
    num_frames: int = N_FRAMES
    audio_pool_stride: int = 3
    trim_audio: bool = True
    absent_audio_seconds: float = 4.0
    cross_attention_heads: int = 8
    audio_context: str = "30s"
    answer_format: str = "explanation_first"
    # Filled by the tokenizer builder; None until then.
    face_token_id: int | None = None
    audio_token_id: int | None = None
    vi_start_token_id: int | None = None
    vi_end_token_id: int | None = None
    au_start_token_id: int | None = None
    au_end_token_id: int | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.audio_context not in AUDIO_CONTEXTS:
            raise ValueError(f"audio_context must be one of {AUDIO_CONTEXTS}, got {self.audio_context!r}")
        if self.answer_format not in ANSWER_FORMATS:
            raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {self.answer_format!r}")
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.audio_pool_stride < 1:
            raise ValueError(f"audio_pool_stride must be >= 1, got {self.audio_pool_stride}")
        if self.fusion == "cross_attention" and self.text_config.hidden_size % self.cross_attention_heads:
            raise ValueError(
                f"hidden size {self.text_config.hidden_size} is not divisible by "
                f"cross_attention_heads={self.cross_attention_heads}"
            )

    # Short-hands used everywhere; the sub-configs stay the single source of truth.
    @property
    def text_config(self):
        return self.base_config.text_config

    @property
    def vision_config(self):
        return self.base_config.vision_config

    @property
    def video_token_id(self) -> int:
        return self.base_config.video_token_index

    @property
    def hidden_size(self) -> int:
        return self.base_config.text_config.hidden_size

    def get_text_config(self, *args, **kwargs):
        # Generation utilities and resize_token_embeddings look the decoder up here.
        return self.base_config.text_config


AutoConfig.register(FaceEncoderConfig.model_type, FaceEncoderConfig)
AutoConfig.register(OmniEmotionConfig.model_type, OmniEmotionConfig)


# Base types a field's declared type may name, and the JSON values each accepts
# (a float field takes an int; bool is never an int here; JSON has lists, not tuples).
_JSON_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "list": (list,),
               "tuple": (list, tuple), "dict": (dict,), "None": (type(None),), "NoneType": (type(None),)}


def _type_parts(declared) -> list[str]:
    """``'int | list[int] | None'`` (or the type object) → its union members, as text."""
    text = declared if isinstance(declared, str) else getattr(declared, "__name__", None) \
        if isinstance(declared, type) else str(declared)
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "|" and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return parts + [cur.strip()]


def _fits(value, part: str) -> bool | None:
    """Whether ``value`` fits one union member (None: a type this check cannot read,
    e.g. Literal or torch.dtype, so any value passes)."""
    name, _, inner = part.removeprefix("typing.").partition("[")
    kinds = _JSON_TYPES.get(name.strip())
    if kinds is None:
        return None
    if isinstance(value, bool) and bool not in kinds:
        return False
    if not isinstance(value, kinds):
        return False
    item = inner.rstrip("]").split(",")[0].strip()
    if name in ("list", "tuple") and item in _JSON_TYPES:
        return all(_fits(x, item) for x in value)
    return True


def check_config_fields(data: dict, config_class: type | None = None, where: str = "") -> None:
    """Every field of a (composed) config as read from ``config.json`` against the type
    its config class declares (or, where the declaration is unreadable, its default's
    type); sub-configs (a dict with a ``model_type``) are checked with their own class.
    Unknown keys pass (transformers keeps them). Raises ValueError naming the field
    (``base_config.text_config.hidden_size``), its value and the type wanted."""
    import dataclasses

    from transformers import CONFIG_MAPPING

    cls = config_class or OmniEmotionConfig
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, name = data[f.name], where + f.name
        if isinstance(value, dict) and value.get("model_type") in CONFIG_MAPPING:
            check_config_fields(value, CONFIG_MAPPING[value["model_type"]], name + ".")
            continue
        parts = _type_parts(f.type)
        if value is None and (f.default is None or "None" in parts):
            continue
        fits = [_fits(value, p) for p in parts]
        if None in fits and f.default not in (None, dataclasses.MISSING):
            fits = [_fits(value, type(f.default).__name__)]
        if None not in fits and not any(fits):
            raise ValueError(f"field {name} must be {' or '.join(parts)}, got {value!r}")
