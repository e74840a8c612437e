"""FaceXFormer's encoder (paper §4.2) on transformers' Swin, and its checkpoint loader.

FaceXFormer publishes `model.pt` with the encoder under `state_dict_backbone` in
torchvision's `swin_b` naming; `convert_facexformer_state_dict` maps those names onto
transformers' `SwinModel` (the numbers match torchvision to ~1e-7, see
`tests/test_face_encoder.py` and `../shared/data/facexformer/`).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from transformers import SwinConfig, SwinModel

from model.net.config import FaceEncoderConfig

CHECKPOINT_KEY = "state_dict_backbone"
NUM_STAGES = 4


def swin_config_from(config: FaceEncoderConfig) -> SwinConfig:
    return SwinConfig(
        image_size=config.image_size,
        patch_size=config.patch_size,
        num_channels=3,
        embed_dim=config.embed_dim,
        depths=list(config.depths),
        num_heads=list(config.num_heads),
        window_size=config.window_size,
        mlp_ratio=config.mlp_ratio,
        qkv_bias=True,
        layer_norm_eps=config.layer_norm_eps,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.0,
    )


class StageProjection(nn.Module):
    """FaceXFormer's per-stage MLP: Linear(C_i → fuse_dim) over channels. The `proj`
    name is the checkpoint's (`linear_c.{i}.proj.*`)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) → (N, fuse_dim, h, w)."""
        n, _, h, w = x.shape
        x = self.proj(x.flatten(2).transpose(1, 2))
        return x.transpose(1, 2).reshape(n, -1, h, w)


class FaceXFormerEncoder(nn.Module):
    """Face crops → pooled face tokens.

    forward: pixel_values (N, 3, 224, 224), ImageNet-normalised → (N, pool_size², fuse_dim)
    """

    def __init__(self, config: FaceEncoderConfig):
        super().__init__()
        if len(config.depths) != NUM_STAGES or len(config.num_heads) != NUM_STAGES:
            raise ValueError(f"FaceXFormer has {NUM_STAGES} stages; got depths={config.depths}")
        self.config = config
        self.backbone = SwinModel(swin_config_from(config), add_pooling_layer=False)
        self.linear_c = nn.ModuleList(StageProjection(c, config.fuse_dim) for c in config.stage_dims)
        # Deepest stage first, as FaceXFormer concatenates them.
        self.linear_fuse = nn.Conv2d(NUM_STAGES * config.fuse_dim, config.fuse_dim, kernel_size=1, bias=False)

    def fused_map(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) → (N, fuse_dim, H/4, W/4): the multi-scale fused face map."""
        out = self.backbone(
            pixel_values,
            output_hidden_states=True,
            output_hidden_states_before_downsampling=True,
            return_dict=True,
        )
        stages = out.reshaped_hidden_states[1 : NUM_STAGES + 1]  # (N, C_i, h_i, w_i)
        size = stages[0].shape[-2:]
        maps = [
            F.interpolate(proj(x), size=size, mode="bilinear", align_corners=False)
            for proj, x in zip(self.linear_c, stages)
        ]
        return self.linear_fuse(torch.cat(maps[::-1], dim=1))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        fused = self.fused_map(pixel_values)
        pooled = F.adaptive_avg_pool2d(fused, self.config.pool_size)
        return pooled.flatten(2).transpose(1, 2)


# torchvision swin_b → transformers SwinModel, inside one block.
_BLOCK_RENAMES = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.proj": "attention.o_proj",
    "attn.relative_position_bias_table": "attention.relative_position_bias.relative_position_bias_table",
    "mlp.0": "mlp.fc1",
    "mlp.3": "mlp.fc2",
}
_BLOCK = re.compile(r"^backbone\.0\.([1357])\.(\d+)\.(.+)$")
_BIAS_TABLE = "attn.relative_position_bias_table"
_MERGE = re.compile(r"^backbone\.0\.([246])\.(reduction|norm)\.(weight|bias)$")


def convert_facexformer_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoint names (torchvision `swin_b` under `backbone.*`) → `FaceXFormerEncoder`
    names. Decoder keys (`face_decoder.*`, `pe_layer.*`, ...) and the fixed
    `relative_position_index` buffers are dropped; an unknown encoder key raises."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("module."):  # saved from DataParallel
            key = key[len("module.") :]
        if key.endswith("relative_position_index") or not key.startswith(("backbone.", "linear_c.", "linear_fuse.")):
            continue
        if key.startswith(("linear_c.", "linear_fuse.")):
            out[key] = value
        elif key.startswith("backbone.0.0.0."):
            out["backbone.embeddings.patch_embeddings.projection." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("backbone.0.0.2."):
            out["backbone.embeddings.norm." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("backbone.1."):
            out["backbone.layernorm." + key.rsplit(".", 1)[1]] = value
        elif m := _MERGE.match(key):
            stage = (int(m.group(1)) - 2) // 2
            out[f"backbone.encoder.layers.{stage}.downsample.{m.group(2)}.{m.group(3)}"] = value
        elif m := _BLOCK.match(key):
            stage, block, rest = (int(m.group(1)) - 1) // 2, m.group(2), m.group(3)
            prefix = f"backbone.encoder.layers.{stage}.blocks.{block}."
            name, kind = (rest, None) if rest == _BIAS_TABLE else rest.rsplit(".", 1)
            if kind is None:
                out[prefix + _BLOCK_RENAMES[name]] = value
            elif name == "attn.qkv":
                for part, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{prefix}attention.{part}.{kind}"] = chunk.clone()
            elif name in _BLOCK_RENAMES:
                out[f"{prefix}{_BLOCK_RENAMES[name]}.{kind}"] = value
            else:
                raise KeyError(f"unexpected FaceXFormer block key {key!r}")
        else:
            raise KeyError(f"unexpected FaceXFormer encoder key {key!r}")
    return out


def load_facexformer_checkpoint(encoder: FaceXFormerEncoder, source: str | Path | dict) -> None:
    """Load a FaceXFormer checkpoint (a `model.pt` path, or its loaded dict) into `encoder`.

    Raises FileNotFoundError for a missing file, and ValueError naming the missing or
    mismatched keys when the checkpoint does not fit the configured encoder.
    """
    if not isinstance(source, dict):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"FaceXFormer checkpoint not found: {path}")
        source = torch.load(path, map_location="cpu", weights_only=False)
    state = source.get(CHECKPOINT_KEY, source)
    converted = convert_facexformer_state_dict(state)
    own = encoder.state_dict()
    missing = sorted(k for k in own if k not in converted and not k.endswith("relative_position_index"))
    if missing:
        raise ValueError(f"FaceXFormer checkpoint lacks {len(missing)} encoder keys, e.g. {missing[:3]}")
    bad = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in converted.items() if k in own and v.shape != own[k].shape]
    if bad:
        raise ValueError(f"FaceXFormer checkpoint shapes do not fit the config: {bad[:3]} (key, file, model)")
    unexpected = sorted(k for k in converted if k not in own)
    if unexpected:
        raise ValueError(f"FaceXFormer checkpoint has keys this encoder lacks: {unexpected[:3]}")
    encoder.load_state_dict(converted, strict=False)
