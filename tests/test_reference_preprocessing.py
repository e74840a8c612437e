"""The processor's inputs are the base models' own preprocessing (issue 23), checked
against each reference implementation on real pictures and speech:

- frames: LLaVA-OneVision's SigLIP processor (transformers' `SiglipImageProcessor`,
  PIL backend, built offline from its config values: 384×384 bicubic, 1/255, 0.5/0.5);
- face crops: FaceXFormer's transform (torchvision `Resize((224, 224), BICUBIC)` on a
  PIL image = PIL's bicubic resize, `ToTensor`, ImageNet `Normalize`);
- audio: Whisper-large-v3's `WhisperFeatureExtractor` (its published
  preprocessor_config values: 128 mel bins, n_fft 400, hop 160, 30 s chunks).

Pictures within one 8-bit step; audio features equal.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data
from transformers import WhisperFeatureExtractor

from live.contract.media import AUDIO_RATE, CROP_SIZE, N_FRAMES
from model.net.presets import preset_config
from model.net.processor import Clip, OmniEmotionProcessor
from model.net.tokenizer import apply_token_ids, build_tiny_tokenizer

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def processor():
    """The 0.5b preset's processor (384 px frames, 224 px crops, Whisper-large-v3 mels)."""
    tok = build_tiny_tokenizer()
    config = preset_config("0.5b")
    apply_token_ids(config, tok)
    return OmniEmotionProcessor(tok, config)


def _frames():
    """Real pictures at a camera's 640×480: the astronaut photo and two other skimage photos."""
    pics = [data.astronaut(), data.chelsea(), data.coffee()]
    frames = [np.asarray(Image.fromarray(p).resize((640, 480), Image.Resampling.LANCZOS)) for p in pics]
    return np.stack([frames[i % len(frames)] for i in range(N_FRAMES)])


def test_frames_match_llava_onevisions_siglip_processor(processor):
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    reference = SiglipImageProcessorPil(do_resize=True, size={"height": 384, "width": 384},
                                        resample=Image.Resampling.BICUBIC, do_rescale=True, rescale_factor=1 / 255,
                                        do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    frames = _frames()
    ours = processor.prepare_media(Clip(frames=frames))["pixel_values_videos"].numpy()
    ref = reference(images=list(frames), return_tensors="np")["pixel_values"]
    assert ours.shape == ref.shape == (N_FRAMES, 3, 384, 384)
    step = (1 / 255) / 0.5  # one 8-bit step after normalisation
    assert np.abs(ours - ref).max() <= step + 1e-6


def test_frames_are_not_the_old_bilinear_resize(processor):
    """The measured gap that motivated the change: antialiased bilinear differs from the
    reference bicubic by many steps at edges."""
    import torch
    from torch.nn import functional as F

    frames = _frames()[:1]
    ours = processor.prepare_media(Clip(frames=np.repeat(frames, N_FRAMES, 0)))["pixel_values_videos"][0]
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    old = (F.interpolate(x, size=(384, 384), mode="bilinear", antialias=True)[0] - 0.5) / 0.5
    assert (ours - old).abs().max() * 127.5 > 5


def _facexformer_transform(crop: np.ndarray) -> np.ndarray:
    """FaceXFormer's `transforms_image` (Resize((224, 224), BICUBIC) → ToTensor →
    Normalize): torchvision resizes a PIL image with PIL's own resize."""
    pil = Image.fromarray(crop).resize((CROP_SIZE, CROP_SIZE), Image.Resampling.BICUBIC)
    x = np.asarray(pil, np.float32).transpose(2, 0, 1) / 255.0
    return (x - np.array(IMAGENET_MEAN, np.float32)[:, None, None]) / np.array(IMAGENET_STD, np.float32)[:, None, None]


@pytest.mark.parametrize("side", [CROP_SIZE, 180, 300])
def test_face_crops_match_facexformers_transform(processor, side):
    face = data.astronaut()[20:260, 150:390]  # her face, 240×240
    crop = np.asarray(Image.fromarray(face).resize((side, side), Image.Resampling.LANCZOS))
    crops = np.repeat(crop[None], N_FRAMES, 0)
    ours = processor.prepare_media(Clip(frames=_frames(), faces=crops))["face_pixel_values"].numpy()
    ref = _facexformer_transform(crop)
    step = (1 / 255) / np.array(IMAGENET_STD)[:, None, None]
    assert np.all(np.abs(ours[0] - ref) <= step + 1e-6)


def _speech() -> np.ndarray:
    from tests.media import speak

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        return speak("She looks worried, and her voice trembles.", Path(tmp) / "s.wav", rate_hz=AUDIO_RATE)


def test_audio_features_match_whispers_feature_extractor(processor):
    reference = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30,
                                        n_fft=400, padding_value=0.0)
    audio = _speech()[: 4 * AUDIO_RATE]
    assert np.abs(audio).max() > 0.1
    ours = processor.prepare_media(Clip(audio=audio))["input_features"].numpy()
    ref = reference(audio, sampling_rate=AUDIO_RATE, return_tensors="np")["input_features"][0]
    assert ours.shape == ref.shape == (128, 3000)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
