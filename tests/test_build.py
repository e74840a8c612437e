"""`python -m model.checkpoint.build`: tiny checkpoints, meta-device descriptions, composing from parts."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    WhisperConfig,
    WhisperForConditionalGeneration,
)

from live.contract.cli import EXIT_USAGE
from model.checkpoint.build import main as build_main
from model.net.config import FaceEncoderConfig
from model.net.face_encoder import CHECKPOINT_KEY, FaceXFormerEncoder
from model.checkpoint.loading import compose_from_pretrained, load
from model.net.presets import TINY_AUDIO, TINY_FACE, TINY_TEXT, TINY_VISION
from model.net.processor import Clip
from model.net.tokenizer import build_tiny_tokenizer
from tests.parallel import two_at_a_time
from tests.test_face_encoder import to_torchvision_names

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "model.checkpoint.build", *args], cwd=REPO, capture_output=True, text=True)


def test_build_tiny_writes_a_loadable_checkpoint(tmp_path, capsys):
    assert build_main(["--preset", "tiny", "--out", str(tmp_path / "ck")]) == 0
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert (tmp_path / "ck" / name).is_file(), name
    model, processor = load(tmp_path / "ck")
    assert processor.tokenizer.convert_tokens_to_ids("<au_start>") == model.config.au_start_token_id


def test_describe_counts_published_sizes():
    runs = two_at_a_time(run_cli, {p: ("--preset", p, "--describe", "--json") for p in ("7b", "0.5b")})
    out = runs["7b"]
    assert out.returncode == 0, out.stderr
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(counts) == {"llm", "vision", "audio", "face", "projectors", "total"}
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    assert 7.5e9 < counts["llm"] < 7.7e9  # Qwen2-7B + untied lm_head
    assert 3.9e8 < counts["vision"] < 4.1e8  # SigLIP-so400m, 26 layers
    assert 6.3e8 < counts["audio"] < 6.4e8  # Whisper-large-v3 encoder
    assert 8.6e7 < counts["face"] < 8.9e7  # Swin-B + fusion
    small = json.loads(runs["0.5b"].stdout.strip().splitlines()[-1])
    assert 4.9e8 < small["llm"] < 5.0e8  # Qwen2-0.5B, tied embeddings
    assert small["vision"] == counts["vision"] and small["audio"] == counts["audio"]


def test_cli_errors_are_one_line(tmp_path):
    out = run_cli("--preset", "7b", "--out", str(tmp_path))
    assert out.returncode != 0 and "Traceback" not in out.stderr
    out = run_cli("--preset", "tiny", "--from-pretrained", "--out", str(tmp_path), "--base", str(tmp_path / "no"),
                  "--audio", str(tmp_path / "no"))
    assert out.returncode == EXIT_USAGE and "Traceback" not in out.stderr and out.stderr.startswith("error:")
    assert "--base folder not found" in out.stderr


@pytest.fixture(scope="module")
def public_parts(tmp_path_factory):
    """Tiny stand-ins for the hub checkpoints, saved in their real formats."""
    root = tmp_path_factory.mktemp("parts")
    tok = build_tiny_tokenizer(omni_tokens=False)  # like LLaVA-OV's: has <image>, <video>
    llava_cfg = LlavaOnevisionConfig(
        vision_config={"model_type": "siglip_vision_model", **TINY_VISION},
        text_config={"model_type": "qwen2", **TINY_TEXT, "vocab_size": len(tok)},
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    torch.manual_seed(1)
    llava = LlavaOnevisionForConditionalGeneration(llava_cfg)
    llava.save_pretrained(root / "llava")
    tok.save_pretrained(root / "llava")
    whisper = WhisperForConditionalGeneration(WhisperConfig(**TINY_AUDIO))
    whisper.save_pretrained(root / "whisper")
    face = FaceXFormerEncoder(FaceEncoderConfig(**TINY_FACE))
    torch.save({CHECKPOINT_KEY: to_torchvision_names(face.state_dict())}, root / "model.pt")
    return root, llava, whisper, face


def test_compose_from_pretrained_keeps_every_public_weight(public_parts):
    root, llava, whisper, face = public_parts
    model, processor = compose_from_pretrained("tiny", str(root / "llava"), str(root / "whisper"), root / "model.pt")
    ours = model.state_dict()
    for k, v in llava.state_dict().items():
        if k.endswith(("embed_tokens.weight",)) or k == "lm_head.weight":
            assert torch.equal(ours[k][: v.shape[0]], v), k  # grown by the 6 new tokens
        else:
            assert torch.equal(ours[k], v), k
    for k, v in whisper.model.encoder.state_dict().items():
        assert torch.equal(ours[f"model.audio_encoder.{k}"], v), k
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model.model.face_encoder(x), face(x))
    assert len(processor.tokenizer) == model.config.text_config.vocab_size == len(build_tiny_tokenizer())
    assert not any(p.device.type == "meta" for p in model.parameters())
    assert model.model.frame_embeddings.abs().sum() == 0


def test_compose_cli_round_trip(public_parts, tmp_path):
    root = public_parts[0]
    out = run_cli("--preset", "tiny", "--from-pretrained", "--base", str(root / "llava"), "--audio",
                  str(root / "whisper"), "--face", str(root / "model.pt"), "--out", str(tmp_path / "oe"))
    assert out.returncode == 0, out.stderr
    model, processor = load(tmp_path / "oe")
    batch = processor([{"role": "user", "content": "How does she feel?"}], Clip(audio=torch.zeros(16000).numpy()))
    with torch.no_grad():
        ids = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert ids.shape[1] > batch["input_ids"].shape[1]


def test_compose_rejects_a_face_checkpoint_of_another_size(public_parts, tmp_path):
    root = public_parts[0]
    big = FaceXFormerEncoder(FaceEncoderConfig(**{**TINY_FACE, "embed_dim": 16}))
    torch.save({CHECKPOINT_KEY: to_torchvision_names(big.state_dict())}, tmp_path / "big.pt")
    with pytest.raises(ValueError, match="FaceXFormer checkpoint shapes do not fit the config"):
        compose_from_pretrained("tiny", str(root / "llava"), str(root / "whisper"), tmp_path / "big.pt")


# Published Qwen2 decoder vocabularies (the `vocab_size` of Qwen/Qwen2-0.5B's and
# Qwen/Qwen2-7B's config.json) and transformers' LLaVA-OneVision conversion rule: add
# <image> and <video>, then pad the embedding rows up to a multiple of 64.
QWEN2_BASE_VOCAB = {"0.5b": 151_936, "7b": 152_064}
LLAVA_OV_ADDED_TOKENS = 2
LLAVA_OV_PAD_MULTIPLE = 64


@pytest.mark.parametrize("preset, published", [("0.5b", 152_000), ("7b", 152_128)])
def test_preset_vocab_follows_the_llava_onevision_conversion_rule(preset, published):
    from model.net.presets import preset_config

    rows = QWEN2_BASE_VOCAB[preset] + LLAVA_OV_ADDED_TOKENS
    derived = -(-rows // LLAVA_OV_PAD_MULTIPLE) * LLAVA_OV_PAD_MULTIPLE
    assert derived == published  # the llava-hf/llava-onevision-qwen2-*-ov-hf config values
    assert preset_config(preset).text_config.vocab_size == derived


# ---- random real-size checkpoints (issue 23) ------------------------------------------


def test_random_tiny_goes_through_the_real_size_path_and_loads_everywhere(tmp_path):
    """`--random` on the tiny preset: the same code that writes the 0.5b/7b checkpoints
    (meta model, tensors drawn shard by shard) gives a checkpoint that loads, is marked
    random, generates, and loads through the quantization loader too."""
    from model.checkpoint.loading import is_random
    from quant.load import load_model

    out = run_cli("--preset", "tiny", "--random", "--out", str(tmp_path / "ck"), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["random"] is True
    assert json.loads((tmp_path / "ck" / "config.json").read_text())["random_weights"] is True
    model, processor = load(tmp_path / "ck")
    assert is_random(model.config)
    reference, _ = build_tiny_reference()
    assert set(model.state_dict()) == set(reference.state_dict())
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all(), name
    batch = processor([{"role": "user", "content": "How does she feel?"}], Clip(audio=torch.zeros(16000).numpy()))
    with torch.no_grad():
        ids = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert ids.shape[1] == batch["input_ids"].shape[1] + 3
    quantized, _ = load_model(tmp_path / "ck", "fp16", "cpu")
    assert is_random(quantized.config)


def build_tiny_reference():
    from model.checkpoint.loading import build_tiny

    return build_tiny()


def test_random_build_shards_like_save_pretrained(tmp_path):
    """Small shards force an index that `load` follows; the dtype is the one asked for."""
    from model.checkpoint.loading import build_random

    build_random("tiny", tmp_path / "ck", dtype=torch.bfloat16, shard_bytes=200_000)
    index = json.loads((tmp_path / "ck" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    model, _ = load(tmp_path / "ck")
    assert model.dtype == torch.bfloat16
    assert set(model.state_dict()) == set(index["weight_map"])


@pytest.mark.parametrize("preset", ["0.5b", "7b"])
def test_random_real_size_layout_matches_the_described_model(preset):
    """What `--random --preset 0.5b|7b` writes, checked on the meta device (no 7B write in
    tests): every parameter of the preset (tied head once), the published parameter
    count, and at float16 the bytes of the checkpoint files."""
    from accelerate import init_empty_weights

    from model.checkpoint.loading import describe, random_layout
    from model.net.modeling import OmniEmotionForConditionalGeneration
    from model.net.presets import preset_config
    from model.net.tokenizer import apply_token_ids, build_tiny_tokenizer

    config = preset_config(preset)
    apply_token_ids(config, build_tiny_tokenizer())  # ids do not change shapes
    with init_empty_weights(include_buffers=False):
        model = OmniEmotionForConditionalGeneration(config)
    layout = random_layout(model)
    params = sum(t.numel() for _, _, t in layout.values() if t.device.type == "meta")
    assert params == describe(preset)["total"]
    assert ("lm_head.weight" in layout) == (not config.tie_word_embeddings)
    fp16_gb = sum(t.numel() * (2 if t.is_floating_point() else t.element_size()) for _, _, t in layout.values()) / 1e9
    assert (3.2 < fp16_gb < 3.3) if preset == "0.5b" else (17.5 < fp16_gb < 17.7)  # quant.footprint: 3.243, 17.573


def test_sized_tokenizer_has_the_real_layout():
    """The offline stand-in for LLaVA-OneVision's tokenizer: Qwen2's size and ids."""
    from model.net.config import LLAVA_OV_IMAGE_TOKEN_ID, LLAVA_OV_VIDEO_TOKEN_ID
    from model.net.presets import preset_config
    from model.net.tokenizer import build_sized_tokenizer

    tok = build_sized_tokenizer()
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]) == \
        [151643, 151644, 151645, LLAVA_OV_IMAGE_TOKEN_ID, LLAVA_OV_VIDEO_TOKEN_ID]
    assert len(tok) == 151_654 <= preset_config("0.5b").text_config.vocab_size  # + our six tokens
    text = "Open-vocabulary labels: worried, tense."
    small = build_tiny_tokenizer(omni_tokens=False)
    assert tok.tokenize(text) == small.tokenize(text)  # the same pieces: prompt lengths as the tiny model's
    assert isinstance(tok.decode(list(range(0, 151_654, 997))), str)  # every id decodes
