"""OmniEmotionProcessor: frames, face crops, 16 kHz audio and a chat → model inputs.

Validates every input at the boundary (rate, shape, dtype, emptiness) and raises
ValueError naming the problem; it never pads over or substitutes bad media.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from transformers import AutoConfig, AutoTokenizer, BatchFeature, WhisperFeatureExtractor

from live.contract.media import AUDIO_RATE, Clip
from model.net import tokens
from model.net.config import OmniEmotionConfig

SIGLIP_MEAN = (0.5, 0.5, 0.5)  # LLaVA-OneVision's SigLIP normalisation
SIGLIP_STD = (0.5, 0.5, 0.5)
IGNORE_INDEX = -100  # label value for positions without loss
PROCESSOR_FILE = "processor_config.json"
DEFAULT_SYSTEM = "You are a helpful assistant."


def _check_images(name: str, images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray):
        raise ValueError(f"{name} must be a numpy array (T, H, W, 3) uint8, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (T, H, W, 3), got {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 RGB, got dtype {images.dtype}")
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise ValueError(f"{name} is empty: shape {images.shape}")


# Resampling of each base model's reference preprocessing (docs/model.md):
# LLaVA-OneVision / SigLIP: transformers' SiglipImageProcessor (PIL backend) and
# LlavaOnevisionVideoProcessor resize to 384×384 with bicubic, rescale 1/255, normalise 0.5/0.5;
# FaceXFormer's transform: torchvision Resize((224, 224), BICUBIC) on a PIL image, ToTensor,
# Normalize(ImageNet). Both are PIL's bicubic on the uint8 picture, done here the same way.
FRAME_RESAMPLE = Image.Resampling.BICUBIC
FACE_RESAMPLE = Image.Resampling.BICUBIC


def _resize(images: np.ndarray, size: int, resample) -> np.ndarray:
    """(T, H, W, 3) uint8 → (T, size, size, 3) uint8 with PIL (the references' resize)."""
    if images.shape[1:3] == (size, size):
        return images
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(im)).resize((size, size), resample))
                     for im in images])


def _to_pixels(images: np.ndarray, size: int, mean, std, resample=FRAME_RESAMPLE) -> torch.Tensor:
    """(T, H, W, 3) uint8 → (T, 3, size, size) float32, resized (`resample`, on the uint8
    picture as the references do), rescaled by 1/255 and normalised."""
    x = torch.from_numpy(np.ascontiguousarray(_resize(images, size, resample))).permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=x.dtype)[None, :, None, None]
    std_t = torch.tensor(std, dtype=x.dtype)[None, :, None, None]
    return (x - mean_t) / std_t


def _stack_mel(feats: list[torch.Tensor | None]) -> torch.Tensor:
    """Per-clip log-mel (128, n_i) (None: no audio) → (B, 128, max n_i). In the "window"
    audio context lengths differ: a shorter clip is right-padded with its own minimum,
    the value Whisper's extractor gives silence (log-mel clamped at max − 8), as the
    extractor itself pads; a clip without audio is zeros (its audio length is 0)."""
    given = [f for f in feats if f is not None]
    bins, longest = given[0].shape[0], max(f.shape[-1] for f in given)
    rows = []
    for f in feats:
        if f is None:
            rows.append(torch.zeros(bins, longest))
        else:
            rows.append(F.pad(f, (0, longest - f.shape[-1]), value=float(f.min())) if f.shape[-1] < longest else f)
    return torch.stack(rows)


class OmniEmotionProcessor:
    """Turns media + a conversation into `OmniEmotionForConditionalGeneration` inputs.

    Token counts come from `model/net/tokens.py` with the model's own config, so the
    processor and the model cannot disagree.
    """

    def __init__(self, tokenizer, config: OmniEmotionConfig, system_prompt: str = DEFAULT_SYSTEM):
        if config.face_token_id is None:
            raise ValueError("config has no special-token ids; build it with model.checkpoint.build or apply_token_ids")
        self.tokenizer = tokenizer
        self.config = config
        self.system_prompt = system_prompt
        self.feature_extractor = WhisperFeatureExtractor(
            feature_size=config.audio_config.num_mel_bins,
            sampling_rate=AUDIO_RATE,
            chunk_length=tokens.audio_window_samples(config) // AUDIO_RATE,
            n_samples=tokens.audio_window_samples(config),
        )

    # ---- persistence -----------------------------------------------------------------

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(path)
        (path / PROCESSOR_FILE).write_text(json.dumps({"system_prompt": self.system_prompt}, indent=2))

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> "OmniEmotionProcessor":
        config = kwargs.pop("config", None) or AutoConfig.from_pretrained(path, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        extra_file = Path(path) / PROCESSOR_FILE
        extra = json.loads(extra_file.read_text()) if extra_file.is_file() else {}
        return cls(tokenizer, config, system_prompt=extra.get("system_prompt", DEFAULT_SYSTEM))

    # ---- media -----------------------------------------------------------------------

    def validate_audio(self, audio, sampling_rate: int) -> np.ndarray:
        if sampling_rate != AUDIO_RATE:
            raise ValueError(f"audio must be {AUDIO_RATE} Hz mono, got sampling_rate={sampling_rate}; resample first")
        if not isinstance(audio, np.ndarray):
            raise ValueError(f"audio must be a numpy float32 array, got {type(audio).__name__}")
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono (samples,), got shape {audio.shape}")
        if not np.issubdtype(audio.dtype, np.floating):
            raise ValueError(f"audio must be float in [-1, 1], got dtype {audio.dtype}")
        if audio.size == 0:
            raise ValueError("audio is empty (0 samples)")
        if not np.isfinite(audio).all():
            raise ValueError("audio contains NaN or infinite samples")
        limit = tokens.audio_window_samples(self.config)
        if audio.size > limit:
            raise ValueError(f"audio is {audio.size / AUDIO_RATE:.1f} s; the encoder takes at most {limit / AUDIO_RATE:.0f} s")
        return audio.astype(np.float32, copy=False)

    def prepare_media(self, clip: Clip, sampling_rate: int = AUDIO_RATE) -> dict:
        """One clip → tensors without a batch dimension, plus its audio token count.

        The clip must hold exactly ``config.num_frames`` frames (already sampled, with
        ``live.contract.media.sample_frames``): the processor never re-samples."""
        cfg, t = self.config, self.config.num_frames
        out: dict = {"num_samples": 0}
        present = np.asarray(clip.face_present)
        if clip.has_video:
            _check_images("frames", clip.frames)
            if clip.frames.shape[0] != t:
                raise ValueError(f"frames has {clip.frames.shape[0]} frames but the model takes exactly {t} "
                                 "(config.num_frames); sample them with live.contract.media.sample_frames")
            out["pixel_values_videos"] = _to_pixels(clip.frames, cfg.vision_config.image_size, SIGLIP_MEAN, SIGLIP_STD)
        if clip.has_video or present.any():
            _check_images("faces", clip.faces)
            if present.shape != (clip.faces.shape[0],) or present.dtype != bool:
                raise ValueError(f"face_present must be bool of shape ({clip.faces.shape[0]},), "
                                 f"got {present.dtype} {present.shape}")
            if clip.faces.shape[0] != t:
                raise ValueError(f"faces has {clip.faces.shape[0]} crops but the clip needs {t} (one per frame)")
        if present.any():  # no face in any frame: the face branch is absent (zeros)
            face_cfg = cfg.face_config
            out["face_pixel_values"] = _to_pixels(clip.faces, face_cfg.image_size, face_cfg.image_mean, face_cfg.image_std,
                                                  FACE_RESAMPLE)
            out["face_present"] = torch.from_numpy(present.copy())
        if clip.has_audio:
            audio = self.validate_audio(clip.audio, sampling_rate)
            # (128, 3000) in the "30s" context, (128, tokens.audio_mel_frames) in "window".
            mel = tokens.audio_mel_frames(cfg, audio.size)
            feats = self.feature_extractor(audio, sampling_rate=AUDIO_RATE, return_tensors="pt",
                                           max_length=mel * tokens.MEL_HOP_SAMPLES)["input_features"]
            out["input_features"] = feats[0]
            out["num_samples"] = int(audio.size)
        out["audio_tokens"] = tokens.audio_token_count(cfg, out["num_samples"] or None)
        return out

    # ---- text ------------------------------------------------------------------------

    def modality_block(self, audio_tokens: int) -> str:
        return "".join(tokens.modality_layout(self.config, audio_tokens))

    def render(self, conversation: list[dict], audio_tokens: int, add_generation_prompt: bool) -> str:
        """The chat as text, with the modality block opening the first user turn."""
        if not conversation or not all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in conversation):
            raise ValueError("conversation must be a non-empty list of {'role', 'content'} dicts")
        messages = [dict(m) for m in conversation]
        if messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        users = [m for m in messages if m["role"] == "user"]
        if not users:
            raise ValueError("conversation has no user turn")
        users[0]["content"] = self.modality_block(audio_tokens) + "\n" + users[0]["content"]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def __call__(
        self,
        conversations: list[dict] | list[list[dict]],
        clips: Clip | list[Clip] | None = None,
        sampling_rate: int = AUDIO_RATE,
        add_generation_prompt: bool = True,
        return_labels: bool = False,
        padding_side: str = "left",
    ) -> BatchFeature:
        """Build a batch.

        conversations: one chat (list of {"role", "content"}) or a list of chats.
        clips: one Clip per chat (None → every modality absent).
        return_labels: the last turn must be the assistant's; labels mask everything but
            its tokens with -100. Right padding suits training, left padding generation.
        Returns input_ids/attention_mask (B, L), pixel_values_videos (B, T, 3, S, S),
        face_pixel_values (B, T, 3, 224, 224), face_present (B, T), input_features
        (B, 128, 3000), audio_lengths (B,) — each modality only when some clip has it.
        """
        single = bool(conversations) and isinstance(conversations[0], dict)
        convs = [conversations] if single else list(conversations)
        clip_list = [clips] if isinstance(clips, Clip) or clips is None else list(clips)
        if clips is None:
            clip_list = [Clip() for _ in convs]
        if len(clip_list) != len(convs):
            raise ValueError(f"{len(convs)} conversations but {len(clip_list)} clips")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")

        media = [self.prepare_media(c, sampling_rate) for c in clip_list]
        ids, labels = [], []
        for conv, m in zip(convs, media):
            if return_labels:
                if conv[-1]["role"] != "assistant":
                    raise ValueError("return_labels needs the conversation to end with the assistant's answer")
                prompt = self.render(conv[:-1], m["audio_tokens"], add_generation_prompt=True)
                full = self.render(conv, m["audio_tokens"], add_generation_prompt=False)
                if not full.startswith(prompt):
                    raise ValueError("chat template does not render the prompt as a prefix of the full chat")
                p_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
                f_ids = self.tokenizer(full, add_special_tokens=False)["input_ids"]
                ids.append(f_ids)
                labels.append([IGNORE_INDEX] * len(p_ids) + f_ids[len(p_ids) :])
            else:
                text = self.render(conv, m["audio_tokens"], add_generation_prompt=add_generation_prompt)
                ids.append(self.tokenizer(text, add_special_tokens=False)["input_ids"])

        batch = self._pad(ids, labels if return_labels else None, padding_side)
        batch.update(self._stack_media(media))
        return BatchFeature(batch)

    def _pad(self, ids: list[list[int]], labels: list[list[int]] | None, side: str) -> dict:
        longest = max(len(x) for x in ids)
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.full((len(ids), longest), pad_id, dtype=torch.long)
        attention = torch.zeros((len(ids), longest), dtype=torch.long)
        label_t = torch.full((len(ids), longest), IGNORE_INDEX, dtype=torch.long) if labels is not None else None
        for i, row in enumerate(ids):
            sl = slice(longest - len(row), longest) if side == "left" else slice(0, len(row))
            input_ids[i, sl] = torch.tensor(row)
            attention[i, sl] = 1
            if label_t is not None:
                label_t[i, sl] = torch.tensor(labels[i])
        out = {"input_ids": input_ids, "attention_mask": attention}
        if label_t is not None:
            out["labels"] = label_t
        return out

    def _stack_media(self, media: list[dict]) -> dict:
        """Stack per-clip tensors; a clip lacking a modality others have gets zeros (and
        face_present False / audio length 0), which the model treats as absent."""
        out = {}
        t, cfg = self.config.num_frames, self.config
        if any("pixel_values_videos" in m for m in media):
            missing = [i for i, m in enumerate(media) if "pixel_values_videos" not in m]
            if missing:
                raise ValueError(f"clips {missing} have no frames while others do; batch them separately")
            out["pixel_values_videos"] = torch.stack([m["pixel_values_videos"] for m in media])
        if any("face_pixel_values" in m for m in media):
            size = cfg.face_config.image_size
            out["face_pixel_values"] = torch.stack(
                [m.get("face_pixel_values", torch.zeros(t, 3, size, size)) for m in media]
            )
            out["face_present"] = torch.stack([m.get("face_present", torch.zeros(t, dtype=torch.bool)) for m in media])
        if any("input_features" in m for m in media):
            out["input_features"] = _stack_mel([m.get("input_features") for m in media])
        out["audio_lengths"] = torch.tensor([m["num_samples"] for m in media], dtype=torch.long)
        return out

    def decode(self, token_ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens)
