"""Building, composing, saving and loading Omni-Emotion checkpoints.

A checkpoint folder holds `config.json`, `model.safetensors` and the tokenizer files
(with the special tokens): `OmniEmotionForConditionalGeneration.from_pretrained` and
`OmniEmotionProcessor.from_pretrained` both read it.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import init_empty_weights
from torch import nn
from transformers import AutoModel, AutoModelForImageTextToText

from live.cli import CliError, one_line, resolve_device  # noqa: F401 - resolve_device: the one --device rule

from model.net.config import OmniEmotionConfig
from model.net.face_encoder import FaceXFormerEncoder, load_facexformer_checkpoint
from model.net.modeling import FaceVisualCrossAttention, OmniEmotionForConditionalGeneration, ProjectorMLP
from model.net.presets import preset_config
from model.net.processor import OmniEmotionProcessor
from model.net.tokenizer import add_omni_special_tokens, apply_token_ids, build_tiny_tokenizer

AutoModel.register(OmniEmotionConfig, OmniEmotionForConditionalGeneration)

# loader(model_dir, plan, device) -> (model, processor): loads a checkpoint folder with a
# precision plan applied (`quant.load_model` is one). Library code takes a Loader as an
# argument; only the command lines (composition roots) pass `quant.load_model` in.
Loader = Callable[[str | Path, str, str], tuple]

COMPONENTS = ("llm", "vision", "audio", "face", "projectors")
# Module prefixes of each component, used by `describe` and the quantization plans.
COMPONENT_PREFIXES = {
    "llm": ("model.language_model", "lm_head"),
    "vision": ("model.vision_tower",),
    "audio": ("model.audio_encoder",),
    "face": ("model.face_encoder",),
    "projectors": (
        "model.multi_modal_projector",
        "model.audio_projector",
        "model.face_projector",
        "model.frame_embeddings",
        "model.image_newline",
        "model.fusion",
    ),
}


def component_of(name: str) -> str:
    """Which component a parameter or module name belongs to."""
    for comp, prefixes in COMPONENT_PREFIXES.items():
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return comp
    raise KeyError(f"{name!r} belongs to no component")


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameters per component and the total (tied weights counted once)."""
    counts = dict.fromkeys(COMPONENTS, 0)
    for name, p in model.named_parameters():
        counts[component_of(name)] += p.numel()
    counts["total"] = sum(counts[c] for c in COMPONENTS)
    return counts


def describe(preset: str, **overrides) -> dict[str, int]:
    """Parameter counts of a preset, instantiated on the meta device (no memory)."""
    config = preset_config(preset, **overrides)
    config.face_token_id = config.audio_token_id = 0  # ids don't change the shapes
    with init_empty_weights(include_buffers=True):
        model = OmniEmotionForConditionalGeneration(config)
    return count_parameters(model)


def build_tiny(out: str | Path | None = None, seed: int = 0, **overrides):
    """A tiny random model + processor (tests, demos without weights); saved if `out`."""
    tokenizer = build_tiny_tokenizer()
    config = preset_config("tiny", vocab_size=len(tokenizer), **overrides)
    apply_token_ids(config, tokenizer)
    torch.manual_seed(seed)
    model = OmniEmotionForConditionalGeneration(config).eval()
    processor = OmniEmotionProcessor(tokenizer, config)
    if out is not None:
        save(model, processor, out)
    return model, processor


def save(model: OmniEmotionForConditionalGeneration, processor: OmniEmotionProcessor, out: str | Path) -> Path:
    out = Path(out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


class CheckpointMissing(CliError, FileNotFoundError):
    """No checkpoint (or a weights file missing) at the given folder; a command line
    reports it as bad input (exit 2)."""


class CheckpointDamaged(CliError, ValueError):
    """A checkpoint file that cannot be parsed (truncated, garbage); exit 2 too."""


def check_checkpoint(path: str | Path, weights: bool = True) -> Path:
    """The one check of a checkpoint folder before anything loads (cheap: config.json is
    parsed and, with `weights`, each safetensors file's header read). Raises
    `CheckpointMissing` (a FileNotFoundError) or `CheckpointDamaged` (a ValueError),
    both `live.cli.CliError`s (exit 2), naming the file and what to do."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    config = path / "config.json"
    if not config.is_file():
        raise CheckpointMissing(f"no Omni-Emotion checkpoint at {path} (config.json missing)")
    try:
        fields = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointDamaged(f"{config} is damaged ({one_line(err)}); rebuild or re-download the checkpoint") from None
    _check_config_fields(config, fields)
    if not weights:
        return path
    index = path / "model.safetensors.index.json"
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    except (ValueError, KeyError, AttributeError) as err:
        raise CheckpointDamaged(f"{index} is damaged ({one_line(err)}); rebuild or re-download the checkpoint") from None
    for name in shards:
        weights = path / name
        if not weights.is_file():
            raise CheckpointMissing(f"{weights} is missing; rebuild or re-download the checkpoint")
        try:
            with safe_open(str(weights), "pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise CheckpointDamaged(f"{weights} is damaged ({one_line(err)}); rebuild or re-download the checkpoint") from None
    return path


def _check_config_fields(config: Path, fields) -> None:
    """Every field of `config` (config.json, parsed) has its declared type
    (`model.net.config.check_config_fields`); else `CheckpointDamaged` naming it."""
    from model.net.config import check_config_fields

    if not isinstance(fields, dict):
        raise CheckpointDamaged(f"{config} is damaged (not a JSON object); rebuild or re-download the checkpoint")
    try:
        check_config_fields(fields)
    except (ValueError, KeyError) as err:
        raise CheckpointDamaged(f"{config}: {one_line(err)}; fix that field or rebuild the checkpoint") from None


def load(path: str | Path, dtype: torch.dtype | None = None, device: str = "cpu", **kwargs):
    """(model, processor) from a checkpoint folder ("auto" device: GPU if any). Errors
    name the folder (`check_checkpoint`) or the device (`live.cli.resolve_device`)."""
    path = check_checkpoint(path)
    device = resolve_device(device)
    try:
        model = OmniEmotionForConditionalGeneration.from_pretrained(path, dtype=dtype, **kwargs)
        if "device_map" not in kwargs and "quantization_config" not in kwargs:
            model = model.to(device)
        processor = OmniEmotionProcessor.from_pretrained(path, config=model.config)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"cannot load the checkpoint at {path}: {one_line(err)}") from err
    return model.eval(), processor


def _fresh(module: nn.Module) -> nn.Module:
    """A new, randomly initialised CPU copy of a (meta) module of ours."""
    if isinstance(module, ProjectorMLP):
        return ProjectorMLP(module.linear_1.in_features, module.linear_2.out_features)
    if isinstance(module, FaceVisualCrossAttention):
        return FaceVisualCrossAttention(module.norm.normalized_shape[0], module.attn.num_heads)
    raise TypeError(f"no fresh initialiser for {type(module).__name__}")


def compose_from_pretrained(
    preset: str,
    base: str,
    audio: str,
    face: str | Path | None,
    dtype: torch.dtype = torch.float32,
    **overrides,
):
    """Compose Omni-Emotion from public parts: a LLaVA-OneVision checkpoint (hub id or
    folder, transformers format), Whisper (hub id or folder; only its encoder is kept),
    and a FaceXFormer `model.pt` (None: random face encoder, with a warning). The new
    projectors, frame embeddings and fusion layer are freshly initialised.

    Parameters are created on the meta device and the loaded tensors assigned in place,
    so peak memory is about one copy of the model.
    """
    llava = AutoModelForImageTextToText.from_pretrained(base, dtype=dtype)
    if llava.config.model_type != "llava_onevision":
        raise ValueError(f"{base} is a {llava.config.model_type!r} checkpoint, not llava_onevision")
    whisper = AutoModel.from_pretrained(audio, dtype=dtype)
    encoder = whisper.get_encoder() if hasattr(whisper, "get_encoder") else whisper.encoder

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    add_omni_special_tokens(tokenizer)
    face_cfg = preset_config(preset).face_config.to_dict()
    config = OmniEmotionConfig(
        base_config=llava.config.to_dict(),
        audio_config=encoder.config.to_dict(),
        face_config=face_cfg,
        tie_word_embeddings=llava.config.tie_word_embeddings,
        **overrides,
    )
    config.text_config.vocab_size = max(config.text_config.vocab_size, len(tokenizer))
    apply_token_ids(config, tokenizer)

    state = dict(llava.state_dict())
    state.update({f"model.audio_encoder.{k}": v for k, v in encoder.state_dict().items()})
    face_encoder = FaceXFormerEncoder(config.face_config)
    if face is not None:
        # The one FaceXFormer loader: names missing, mis-shaped and unexpected keys.
        load_facexformer_checkpoint(face_encoder, face)
    else:
        print("warning: no FaceXFormer checkpoint given; the face encoder is random", file=sys.stderr)
    del llava, whisper, encoder

    with init_empty_weights(include_buffers=False):
        model = OmniEmotionForConditionalGeneration(config)
    embed = state.get("model.language_model.embed_tokens.weight")
    if embed is not None and embed.shape[0] != config.text_config.vocab_size:
        state["model.language_model.embed_tokens.weight"] = _pad_rows(embed, config.text_config.vocab_size)
        if "lm_head.weight" in state:
            state["lm_head.weight"] = _pad_rows(state["lm_head.weight"], config.text_config.vocab_size)
    try:
        result = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as err:  # size mismatches: say which parts, without the wall of text
        first = str(err).split("size mismatch for ", 1)[-1].split("\n")[0]
        raise ValueError(f"public checkpoints do not fit the {preset} config: {first}") from None
    if result.unexpected_keys:
        raise ValueError(f"unexpected keys from the public checkpoints: {result.unexpected_keys[:5]}")

    # Fresh parts: everything still on the meta device must be ours to initialise.
    fresh_modules = ["model.audio_projector", "model.face_projector"] + (["model.fusion"] if model.model.fusion else [])
    for name in fresh_modules:
        parent, attr = name.rsplit(".", 1)
        setattr(model.get_submodule(parent), attr, _fresh(model.get_submodule(name)).to(dtype))
    model.model.face_encoder = face_encoder.to(dtype)  # loaded above, or random
    model.model.frame_embeddings = nn.Parameter(torch.zeros(config.num_frames, config.hidden_size, dtype=dtype))
    if config.tie_word_embeddings:
        model.tie_weights()
    still_meta = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if still_meta:
        raise ValueError(f"parameters missing from the public checkpoints: {still_meta[:5]}")
    processor = OmniEmotionProcessor(tokenizer, config)
    return model.eval(), processor


def _pad_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """Grow an embedding matrix to `rows`, new rows = mean of the old (as transformers'
    mean-resizing does), so new special tokens start in-distribution."""
    extra = rows - weight.shape[0]
    if extra < 0:
        raise ValueError(f"cannot shrink embeddings from {weight.shape[0]} to {rows}")
    return torch.cat([weight, weight.mean(0, keepdim=True).expand(extra, -1)], dim=0)
