"""Token counts and the placeholder layout: the one place each number is computed.

The processor lays placeholders out with these functions, the model checks its features
against them, and the tests assert them. Nobody else recomputes a count.

The layout of the user turn (paper §4.4; VISUAL per fusion, Fig. 6) is tabled in
docs/model.md; `masked_scatter` fills placeholders in order, so per-frame interleaving
needs nothing more than this layout.
"""
from __future__ import annotations

import math

from live.contract.media import AUDIO_RATE

# Whisper front end: 16 kHz (AUDIO_RATE), 10 ms hop → 100 mel frames/s; conv2 has stride 2.
MEL_HOP_SAMPLES = 160
ENCODER_CONV_STRIDE = 2


def visual_tokens_per_frame(config) -> int:
    """SigLIP patches per side, pooled 2×2 the way LLaVA-OneVision pools video frames
    (bilinear to ceil(side/2)): 384/14 → 27×27 = 729 → 14×14 = 196."""
    side = config.vision_config.image_size // config.vision_config.patch_size
    pooled = math.ceil(side / 2)
    return pooled * pooled


def visual_token_count(config, num_frames: int | None = None) -> int:
    """All `<video>` placeholders of one clip: frames × per-frame + 1 newline token."""
    frames = config.num_frames if num_frames is None else num_frames
    return frames * visual_tokens_per_frame(config) + 1


def face_tokens_per_frame(config) -> int:
    """FaceXFormer's fused 56×56 map average-pooled to pool_size² (default 7×7 = 49)."""
    return config.face_config.pool_size**2


def face_token_count(config, num_frames: int | None = None) -> int:
    frames = config.num_frames if num_frames is None else num_frames
    return frames * face_tokens_per_frame(config)


def audio_tokens_total(config) -> int:
    """Tokens of the full padded Whisper window: 1500 states / stride 3 = 500."""
    return config.audio_config.max_source_positions // config.audio_pool_stride


def audio_window_samples(config) -> int:
    """The longest audio the Whisper encoder takes, in samples (30 s at 16 kHz for
    large-v3: its 1500 positions), in either audio context."""
    return config.audio_config.max_source_positions * ENCODER_CONV_STRIDE * MEL_HOP_SAMPLES


def _real_token_count(config, num_samples: int) -> int:
    """Tokens covering `num_samples` of real audio: samples → mel frames (÷160) →
    encoder states (÷2, ceil) → tokens (÷stride, ceil): 4 s → 400 → 200 → 67."""
    if num_samples <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    mel_frames = max(1, num_samples // MEL_HOP_SAMPLES)
    states = math.ceil(mel_frames / ENCODER_CONV_STRIDE)
    return min(audio_tokens_total(config), math.ceil(states / config.audio_pool_stride))


def audio_token_count(config, num_samples: int | None) -> int:
    """Audio tokens for a clip of `num_samples` at 16 kHz; None means the track is absent.

    `audio_context="30s"` (the paper): the encoder sees 30 s; with `trim_audio` only the
    tokens covering real audio are kept (4 s → 67 of 500), else all 500.
    `audio_context="window"`: the encoder sees the clip's own length (see
    `audio_mel_frames`) and gives exactly the tokens covering it (4 s → 67), trimmed or not.
    An absent track is given `absent_audio_seconds` worth of (zero) tokens so a live
    window's layout is the same with and without a microphone.
    """
    if config.audio_context == "30s" and not config.trim_audio:
        return audio_tokens_total(config)
    if num_samples is None:
        num_samples = int(round(config.absent_audio_seconds * AUDIO_RATE))
    return _real_token_count(config, num_samples)


def audio_mel_frames(config, num_samples: int) -> int:
    """Mel frames the Whisper encoder is fed for a clip of `num_samples`: 3000 (30 s)
    in the "30s" context; in the "window" context the clip's own frames padded up to
    a whole number of tokens (tokens × stride × 2: 4 s → 67 × 6 = 402), so pooling keeps
    the same 67 tokens the 30 s context keeps."""
    if config.audio_context == "30s":
        return config.audio_config.max_source_positions * ENCODER_CONV_STRIDE
    return _real_token_count(config, num_samples) * config.audio_pool_stride * ENCODER_CONV_STRIDE


def modality_layout(config, audio_tokens: int, num_frames: int | None = None) -> list[str]:
    """The token strings of the modality block, in order (see module docstring)."""
    frames = config.num_frames if num_frames is None else num_frames
    video, face, audio = "<video>", "<face>", "<audio>"
    v, f = visual_tokens_per_frame(config), face_tokens_per_frame(config)
    block = ["<vi_start>"]
    if config.fusion == "video_concat":
        block += [video] * (v * frames) + [face] * (f * frames)
    else:
        for _ in range(frames):
            block += [video] * v + [face] * f
    block += [video, "<vi_end>", "<au_start>"] + [audio] * audio_tokens + ["<au_end>"]
    return block
