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

from live.contract.cli import one_line, resolve_device

from model.checkpoint.check import check_checkpoint
from model.net.config import OmniEmotionConfig
from model.net.face_encoder import FaceXFormerEncoder, load_facexformer_checkpoint
from model.net.modeling import FaceVisualCrossAttention, OmniEmotionForConditionalGeneration, ProjectorMLP
from model.net.presets import preset_config
from model.net.processor import OmniEmotionProcessor
from model.net.tokenizer import add_omni_special_tokens, apply_token_ids, build_sized_tokenizer, build_tiny_tokenizer

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


# Set in the config.json of a checkpoint whose weights are random (`build_random`): no
# label it gives means anything; the page and the results say so.
RANDOM_FLAG = "random_weights"
SHARD_BYTES = 2 * 1024**3
INIT_STD = 0.02  # the decoders' and encoders' `initializer_range`


def is_random(config) -> bool:
    """Whether a checkpoint's weights are random (built by `build_random`)."""
    return bool(getattr(config, RANDOM_FLAG, False))


def _random_value(module: nn.Module, name: str, shape, dtype, gen: torch.Generator) -> torch.Tensor:
    """A parameter's random value: norms' weights 1, biases 0, every other tensor N(0, 0.02²)."""
    if name.endswith("bias"):
        return torch.zeros(shape, dtype=dtype)
    if "norm" in type(module).__name__.lower() and name.endswith("weight"):
        return torch.ones(shape, dtype=dtype)
    return torch.empty(shape, dtype=dtype).normal_(0.0, INIT_STD, generator=gen)


def random_layout(model: nn.Module) -> dict[str, tuple[nn.Module, str, torch.Tensor]]:
    """What a checkpoint of `model` (built on the meta device, buffers real) saves, in
    order: name → (owning module, attribute, meta parameter or real buffer). A tied
    output head is left out, as `save_pretrained` leaves it out (loading ties it)."""
    saved = model.state_dict().keys()
    tied = set(getattr(model, "_tied_weights_keys", None) or {}) if model.config.tie_word_embeddings else set()
    owners = dict(model.named_modules())
    tensors = {}
    for name, t in [*model.named_parameters(), *((n, b) for n, b in model.named_buffers() if n in saved)]:
        if name not in tied:
            mod, _, attr = name.rpartition(".")
            tensors[name] = (owners[mod], attr, t)
    return tensors


def build_random(preset: str, out: str | Path, dtype: torch.dtype = torch.float32, seed: int = 0,
                 shard_bytes: int = SHARD_BYTES, **overrides) -> Path:
    """A checkpoint of `preset`'s architecture with random weights, written to `out` one
    shard at a time (peak memory about one shard, so the 7b preset builds in a few GB of
    RAM). Its tokenizer is built offline: the tiny BPE for `tiny`, and for the real
    presets `build_sized_tokenizer` (Qwen2 / LLaVA-OneVision's size and special-token
    ids). The config carries `random_weights: true` (`is_random`). Everything that loads
    a checkpoint (`load`, `quant.load.load_model`) loads it like any other."""
    import safetensors.torch

    tokenizer = build_tiny_tokenizer() if preset == "tiny" else build_sized_tokenizer()
    config = preset_config(preset, vocab_size=len(tokenizer) if preset == "tiny" else None, **overrides)
    apply_token_ids(config, tokenizer)
    setattr(config, RANDOM_FLAG, True)
    config.dtype = dtype
    with init_empty_weights(include_buffers=False):
        model = OmniEmotionForConditionalGeneration(config)
    tensors = random_layout(model)
    shards, size = [[]], 0
    for name, (_, _, t) in tensors.items():
        nbytes = t.numel() * (dtype.itemsize if t.is_floating_point() else t.element_size())
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    weight_map, total = {}, 0
    files = ["model.safetensors"] if len(shards) == 1 else \
        [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for file, names in zip(files, shards):
        part = {}
        for name in names:
            module, attr, t = tensors[name]
            if t.device.type == "meta":
                part[name] = _random_value(module, attr, t.shape, dtype, gen)
            else:  # a real buffer (position indices, ...): as the module built it
                part[name] = t.to(dtype) if t.is_floating_point() else t.contiguous()
            total += part[name].numel() * part[name].element_size()
            weight_map[name] = file
        safetensors.torch.save_file(part, str(out / file), metadata={"format": "pt"})
        del part
    if len(files) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config.save_pretrained(out)
    OmniEmotionProcessor(tokenizer, config).save_pretrained(out)
    return out


def save(model: OmniEmotionForConditionalGeneration, processor: OmniEmotionProcessor, out: str | Path) -> Path:
    out = Path(out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def load(path: str | Path, dtype: torch.dtype | None = None, device: str = "cpu", **kwargs):
    """(model, processor) from a checkpoint folder ("auto" device: GPU if any). Errors
    name the folder (`check_checkpoint`) or the device (`live.contract.cli.resolve_device`)."""
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
    config = OmniEmotionConfig(
        base_config=llava.config.to_dict(),
        audio_config=encoder.config.to_dict(),
        face_config=preset_config(preset).face_config.to_dict(),
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
    _assign_public(model, state, preset)
    _fill_fresh(model, face_encoder, dtype)
    return model.eval(), OmniEmotionProcessor(tokenizer, config)


def _assign_public(model: OmniEmotionForConditionalGeneration, state: dict, preset: str) -> None:
    """Assign the public checkpoints' tensors (`state`) in place of the meta model's, the
    embeddings and LM head padded to the (grown) vocabulary; errors name what does not fit."""
    vocab = model.config.text_config.vocab_size
    embed = state.get("model.language_model.embed_tokens.weight")
    if embed is not None and embed.shape[0] != vocab:
        state["model.language_model.embed_tokens.weight"] = _pad_rows(embed, vocab)
        if "lm_head.weight" in state:
            state["lm_head.weight"] = _pad_rows(state["lm_head.weight"], vocab)
    try:
        result = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as err:  # size mismatches: say which parts, without the wall of text
        first = str(err).split("size mismatch for ", 1)[-1].split("\n")[0]
        raise ValueError(f"public checkpoints do not fit the {preset} config: {first}") from None
    if result.unexpected_keys:
        raise ValueError(f"unexpected keys from the public checkpoints: {result.unexpected_keys[:5]}")


def _fill_fresh(model: OmniEmotionForConditionalGeneration, face_encoder: nn.Module, dtype: torch.dtype) -> None:
    """Put our parts in: fresh projectors and fusion layer, `face_encoder` (loaded or
    random), zero frame embeddings; then nothing may be left on the meta device."""
    config = model.config
    for name in ["model.audio_projector", "model.face_projector"] + (["model.fusion"] if model.model.fusion else []):
        parent, attr = name.rsplit(".", 1)
        setattr(model.get_submodule(parent), attr, _fresh(model.get_submodule(name)).to(dtype))
    model.model.face_encoder = face_encoder.to(dtype)
    model.model.frame_embeddings = nn.Parameter(torch.zeros(config.num_frames, config.hidden_size, dtype=dtype))
    if config.tie_word_embeddings:
        model.tie_weights()
    still_meta = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if still_meta:
        raise ValueError(f"parameters missing from the public checkpoints: {still_meta[:5]}")


def _pad_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """Grow an embedding matrix to `rows`, new rows = mean of the old (as transformers'
    mean-resizing does), so new special tokens start in-distribution."""
    extra = rows - weight.shape[0]
    if extra < 0:
        raise ValueError(f"cannot shrink embeddings from {weight.shape[0]} to {rows}")
    return torch.cat([weight, weight.mean(0, keepdim=True).expand(extra, -1)], dim=0)
