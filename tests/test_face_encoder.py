"""FaceXFormer encoder: loads the published checkpoint layout and reproduces torchvision."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.net.config import FaceEncoderConfig
from model.net.face_encoder import (
    CHECKPOINT_KEY,
    FaceXFormerEncoder,
    convert_facexformer_state_dict,
    load_facexformer_checkpoint,
)

DATA = Path(__file__).resolve().parent / "data" / "facexformer"  # provenance: tests/data/README.md
REFERENCE = DATA / "facexformer-small-reference.pt"
KEYS = DATA / "facexformer-encoder-keys.json"


def to_torchvision_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of the loader's mapping, to write checkpoints in the published layout."""
    inverse = {}
    blocks = {"layernorm_before": "norm1", "layernorm_after": "norm2", "attention.o_proj": "attn.proj",
              "attention.relative_position_bias.relative_position_bias_table": "attn.relative_position_bias_table",
              "mlp.fc1": "mlp.0", "mlp.fc2": "mlp.3"}
    qkv: dict[str, list] = {}
    for k, v in state.items():
        if k.endswith("relative_position_index"):
            continue
        if k.startswith(("linear_c", "linear_fuse")):
            inverse[k] = v
        elif k.startswith("backbone.embeddings.patch_embeddings.projection."):
            inverse["backbone.0.0.0." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("backbone.embeddings.norm."):
            inverse["backbone.0.0.2." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("backbone.layernorm."):
            inverse["backbone.1." + k.rsplit(".", 1)[1]] = v
        elif ".downsample." in k:
            stage = int(k.split(".")[3])
            inverse[f"backbone.0.{2 * stage + 2}." + k.split(".downsample.")[1]] = v
        else:
            parts = k.split(".")
            stage, block, rest = int(parts[3]), parts[5], ".".join(parts[6:])
            prefix = f"backbone.0.{2 * stage + 1}.{block}."
            if rest.startswith("attention.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                qkv.setdefault(prefix + "attn.qkv." + rest.rsplit(".", 1)[1], [None] * 3)[
                    ("q_proj", "k_proj", "v_proj").index(rest.split(".")[1])
                ] = v
                continue
            for ours, theirs in blocks.items():
                if rest.startswith(ours):
                    inverse[prefix + theirs + rest[len(ours):]] = v
                    break
            else:
                raise KeyError(k)
    inverse.update({k: torch.cat(v, 0) for k, v in qkv.items()})
    return inverse


def test_reproduces_the_torchvision_reference():
    ref = torch.load(REFERENCE, weights_only=False)
    c = ref["config"]
    cfg = FaceEncoderConfig(embed_dim=c["embed_dim"], depths=c["depths"], num_heads=c["num_heads"],
                            window_size=c["window_size"], patch_size=c["patch_size"], fuse_dim=c["fuse_dim"])
    encoder = FaceXFormerEncoder(cfg).eval()
    load_facexformer_checkpoint(encoder, ref)
    with torch.no_grad():
        fused = encoder.fused_map(ref["input"])
        tokens = encoder(ref["input"])
    assert fused.shape == ref["fused"].shape == (1, 16, 56, 56)
    torch.testing.assert_close(fused, ref["fused"], atol=1e-5, rtol=1e-5)
    assert tokens.shape == (1, 7 * 7, 16)


def test_full_size_keys_match_the_published_checkpoint():
    import json

    published = json.loads(KEYS.read_text())
    encoder_shapes = {k: tuple(v.shape) for k, v in FaceXFormerEncoder(FaceEncoderConfig()).state_dict().items()
                      if not k.endswith("relative_position_index")}
    fake = {k: torch.empty(shape) for k, shape in published.items()}
    converted = {k: tuple(v.shape) for k, v in convert_facexformer_state_dict(fake).items()}
    assert converted == encoder_shapes


def test_round_trip_through_the_published_layout(tmp_path):
    cfg = FaceEncoderConfig(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), fuse_dim=16, pool_size=2)
    torch.manual_seed(0)
    a, b = FaceXFormerEncoder(cfg).eval(), FaceXFormerEncoder(cfg).eval()
    ckpt = {CHECKPOINT_KEY: to_torchvision_names(a.state_dict())}
    ckpt[CHECKPOINT_KEY]["face_decoder.layers.0.weight"] = torch.zeros(3)  # decoder keys are ignored
    torch.save(ckpt, tmp_path / "model.pt")
    load_facexformer_checkpoint(b, tmp_path / "model.pt")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_checkpoint_errors_are_clear(tmp_path):
    cfg = FaceEncoderConfig(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), fuse_dim=16, pool_size=2)
    encoder = FaceXFormerEncoder(cfg)
    with pytest.raises(FileNotFoundError, match="model.pt"):
        load_facexformer_checkpoint(encoder, tmp_path / "model.pt")
    state = to_torchvision_names(encoder.state_dict())
    state.pop("linear_fuse.weight")
    with pytest.raises(ValueError, match="lacks 1 encoder keys"):
        load_facexformer_checkpoint(encoder, {CHECKPOINT_KEY: state})
    wide = FaceXFormerEncoder(FaceEncoderConfig(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2),
                                                fuse_dim=16, pool_size=2))
    with pytest.raises(ValueError, match="shapes do not fit"):
        load_facexformer_checkpoint(encoder, {CHECKPOINT_KEY: to_torchvision_names(wide.state_dict())})
