"""Omni-Emotion (paper §4): LLaVA-OneVision + Whisper audio encoder + FaceXFormer faces.

Module names follow `LlavaOnevisionForConditionalGeneration` (`model.vision_tower`,
`model.multi_modal_projector`, `model.language_model`, `model.image_newline`, `lm_head`),
so a real LLaVA-OneVision state dict loads into this model unchanged; the new parts sit
beside them (`model.audio_encoder`, `model.audio_projector`, `model.face_encoder`,
`model.face_projector`, `model.frame_embeddings`, `model.fusion`).

Modality features reach the decoder only through placeholder tokens + `masked_scatter`
(see `model/net/tokens.py` for the layout). A missing modality is a zero tensor of the
right shape, so the layout never changes.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import ModelOutput
from transformers.models.llava_onevision.modeling_llava_onevision import LlavaOnevisionMultiModalProjector
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from model.net import tokens
from model.net.config import OmniEmotionConfig
from model.net.face_encoder import FaceXFormerEncoder

# Inputs only the prefill step needs; decode steps see just the new token.
PREFILL_ONLY_INPUTS = ("pixel_values_videos", "face_pixel_values", "face_present", "input_features", "audio_lengths",
                       "visual_embeds", "face_embeds")

# What trains in each phase of paper §4.4 (module-name prefixes under the top model).
PHASE_TRAINABLE = {
    1: ("model.audio_projector",),
    2: ("model.face_projector",),
    3: (
        "model.audio_projector",
        "model.face_projector",
        "model.multi_modal_projector",
        "model.frame_embeddings",
        "model.fusion",
        "model.language_model",
        "lm_head",
    ),
}


def float_dtype(module: nn.Module) -> torch.dtype:
    """The dtype a module computes in: that of its first floating-point parameter
    (quantized weights are stored as integers, their norms and biases are not)."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def whisper_encode_window(enc: WhisperEncoder, mel: torch.Tensor) -> torch.Tensor:
    """`WhisperEncoder.forward` on a mel shorter than 30 s (the "window" audio context):
    the same layers, with the first M/2 position embeddings (the stock forward insists
    on 3000 frames). mel (B, 128, M) → states (B, ceil(M/2), d_model)."""
    if (mel.shape[-1] + 1) // 2 > enc.embed_positions.num_embeddings:
        raise ValueError(f"{mel.shape[-1]} mel frames exceed the encoder's {2 * enc.embed_positions.num_embeddings}")
    x = F.gelu(enc.conv2(F.gelu(enc.conv1(mel)))).permute(0, 2, 1)
    x = x + enc.embed_positions.weight[: x.shape[1]].to(x.dtype)
    x = F.dropout(x, p=enc.dropout, training=enc.training)
    for layer in enc.layers:
        x = layer(x, None)
    return enc.layer_norm(x)


def next_token_loss(logits: torch.Tensor, labels: torch.LongTensor) -> torch.Tensor:
    """Mean cross-entropy of logits (B, L, V) at position i against labels (B, L) at
    i + 1, -100 ignored; in float32 for a stable softmax under bf16."""
    shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    shift_labels = labels[:, 1:].reshape(-1).to(shift_logits.device)
    return F.cross_entropy(shift_logits, shift_labels, ignore_index=-100)


class ProjectorMLP(nn.Module):
    """Linear(in → H), GELU, Linear(H → H): the audio and face projectors (paper §4.1-4.2)."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, hidden)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class FaceVisualCrossAttention(nn.Module):
    """Fusion (b) of Fig. 6: per frame, face tokens query the frame's visual tokens.

    face (N, f, H), visual (N, v, H) → (N, f, H); residual + LayerNorm keep the face
    tokens' own content when the attention has not learned anything yet.
    """

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, face: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attn(face, visual, visual, need_weights=False)
        return self.norm(face + attended)


@dataclass
class OmniEmotionOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    cache: object | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


class OmniEmotionPreTrainedModel(PreTrainedModel):
    config_class = OmniEmotionConfig
    config: OmniEmotionConfig
    base_model_prefix = "model"
    input_modalities = ("video", "audio", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _no_split_modules = ["Qwen2DecoderLayer", "SiglipEncoderLayer", "WhisperEncoderLayer", "SwinLayer"]

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, OmniEmotionModel):
            std = 1 / self.config.hidden_size**0.5
            nn.init.normal_(module.image_newline, mean=0.0, std=std)
            # Zero frame embeddings leave the base model's behaviour unchanged until trained.
            nn.init.zeros_(module.frame_embeddings)


class OmniEmotionModel(OmniEmotionPreTrainedModel):
    """Encoders, projectors, fusion and the decoder body (no LM head)."""

    def __init__(self, config: OmniEmotionConfig):
        super().__init__(config)
        hidden = config.hidden_size
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = LlavaOnevisionMultiModalProjector(config.base_config)
        self.image_newline = nn.Parameter(torch.zeros(hidden))
        self.language_model = AutoModel.from_config(config.text_config)
        self.audio_encoder = WhisperEncoder(config.audio_config)
        self.audio_projector = ProjectorMLP(config.audio_config.d_model, hidden)
        self.face_encoder = FaceXFormerEncoder(config.face_config)
        self.face_projector = ProjectorMLP(config.face_config.fuse_dim, hidden)
        self.frame_embeddings = nn.Parameter(torch.zeros(config.num_frames, hidden))
        self.fusion = (
            FaceVisualCrossAttention(hidden, config.cross_attention_heads)
            if config.fusion == "cross_attention"
            else None
        )
        self.post_init()

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    # ---- per-modality features -------------------------------------------------------

    def visual_features(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, S, S) → (B, T, v, H): SigLIP → LLaVA-OV projector → 2×2 pooling."""
        b, t = pixel_values_videos.shape[:2]
        cfg = self.config.base_config
        frames = pixel_values_videos.flatten(0, 1).to(float_dtype(self.vision_tower))
        feats = self.vision_states(frames, cfg.vision_feature_layer)
        if cfg.vision_feature_select_strategy == "default":
            feats = feats[:, 1:]
        # Each part may sit in its own precision (quant plans): cast at every boundary.
        feats = self.multi_modal_projector(feats.to(float_dtype(self.multi_modal_projector)))
        side = self.config.vision_config.image_size // self.config.vision_config.patch_size
        grid = feats.view(b * t, side, side, -1).permute(0, 3, 1, 2)
        pooled_side = int(tokens.visual_tokens_per_frame(self.config) ** 0.5)
        grid = F.interpolate(grid, size=(pooled_side, pooled_side), mode="bilinear")
        return grid.flatten(2).transpose(1, 2).reshape(b, t, pooled_side * pooled_side, -1)

    def vision_states(self, frames: torch.Tensor, layer: int | Sequence[int]) -> torch.Tensor:
        """(N, 3, S, S) → (N, P(+1), Dv): SigLIP's hidden state at ``layer`` (numbered as
        ``output_hidden_states`` numbers them: 0 the embeddings, k the k-th layer's
        output, negative from the end; a list concatenates them on the last axis).

        Caught with forward hooks instead of ``output_hidden_states=True``, which keeps
        every layer's state alive at once (28 × (8·729·1152) values, 0.38 GB of a 7B
        window's peak GPU memory in fp16) to read one of them."""
        tower = getattr(self.vision_tower, "vision_model", self.vision_tower)
        blocks = [tower.embeddings, *tower.encoder.layers]
        wanted = [layer] if isinstance(layer, int) else list(layer)
        keys = [i % len(blocks) if -len(blocks) <= i < len(blocks) else None for i in wanted]
        if None in keys:
            raise ValueError(f"vision_feature_layer {layer} is outside SigLIP's {len(blocks)} hidden states")
        caught: dict[int, torch.Tensor] = {}

        def catch(k):
            def hook(module, args, out):
                caught[k] = out[0] if isinstance(out, tuple) else out
            return hook

        handles = [blocks[k].register_forward_hook(catch(k)) for k in set(keys)]
        try:
            self.vision_tower(frames, return_dict=True)
        finally:
            for h in handles:
                h.remove()
        feats = [caught[k] for k in keys]
        return feats[0] if len(feats) == 1 else torch.cat(feats, -1)

    def face_features(self, face_pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, 224, 224) → (B, T, f, H)."""
        b, t = face_pixel_values.shape[:2]
        crops = face_pixel_values.flatten(0, 1).to(float_dtype(self.face_encoder))
        feats = self.face_projector(self.face_encoder(crops).to(float_dtype(self.face_projector)))
        return feats.view(b, t, feats.shape[1], -1)

    def audio_features(self, input_features: torch.Tensor) -> torch.Tensor:
        """(B, 128, M) log-mel → (B, M / 6, H): Whisper encoder → avg-pool /3 → MLP.

        M = 3000 (→ 500 tokens) in the "30s" audio context; in "window" any M up to 3000
        (`tokens.audio_mel_frames`), the position embeddings sliced to its length."""
        mel = input_features.to(float_dtype(self.audio_encoder))
        if self.config.audio_context == "30s":
            states = self.audio_encoder(mel).last_hidden_state
        else:
            states = whisper_encode_window(self.audio_encoder, mel)
        stride = self.config.audio_pool_stride
        pooled = F.avg_pool1d(states.transpose(1, 2), kernel_size=stride, stride=stride).transpose(1, 2)
        return self.audio_projector(pooled.to(float_dtype(self.audio_projector)))

    # ---- assembling the sequence -----------------------------------------------------

    def _visual_sequence(self, batch, pixel_values_videos, face_pixel_values, face_present, dtype, device,
                         visual_embeds=None, face_embeds=None):
        """Visual and face token features for `batch` clips, in placeholder order.

        visual_embeds (B, T, v, H) / face_embeds (B, T, f, H): `visual_features` /
        `face_features` already computed (the serving per-frame cache,
        `model.serve.features`), used instead of the pixels; the per-slot parts (frame
        embeddings, face_present mask, fusion, newline) are applied here either way.
        Returns video (B·(T·v+1), H) and face (B·T·f, H) rows.
        """
        cfg, hidden = self.config, self.config.hidden_size
        t = cfg.num_frames
        v, f = tokens.visual_tokens_per_frame(cfg), tokens.face_tokens_per_frame(cfg)
        frame_pos = self.frame_embeddings.to(dtype)[None, :, None, :]  # (1, T, 1, H)

        if visual_embeds is not None:
            if visual_embeds.shape[:2] != (batch, t):
                raise ValueError(f"visual_embeds must be (batch={batch}, frames={t}, v, H), got {tuple(visual_embeds.shape)}")
            visual = visual_embeds.to(dtype) + frame_pos
        elif pixel_values_videos is not None:
            if pixel_values_videos.shape[:2] != (batch, t):
                raise ValueError(
                    f"pixel_values_videos must be (batch={batch}, frames={t}, 3, S, S), got {tuple(pixel_values_videos.shape)}"
                )
            visual = self.visual_features(pixel_values_videos).to(dtype) + frame_pos
        else:
            visual = torch.zeros(batch, t, v, hidden, dtype=dtype, device=device)

        has_face = face_embeds is not None or face_pixel_values is not None
        if face_embeds is not None:
            if face_embeds.shape[:2] != (batch, t):
                raise ValueError(f"face_embeds must be (batch={batch}, frames={t}, f, H), got {tuple(face_embeds.shape)}")
            face = face_embeds.to(dtype) + frame_pos
        elif face_pixel_values is not None:
            if face_pixel_values.shape[:2] != (batch, t):
                raise ValueError(
                    f"face_pixel_values must be (batch={batch}, frames={t}, 3, 224, 224), got {tuple(face_pixel_values.shape)}"
                )
            face = self.face_features(face_pixel_values).to(dtype) + frame_pos
        if has_face and face_present is not None:
            # Frames without a face get the zero tensor of a missing modality.
            face = face * face_present.to(device=device, dtype=dtype)[:, :, None, None]
        if not has_face:
            face = torch.zeros(batch, t, f, hidden, dtype=dtype, device=device)

        if self.fusion is not None:
            attended = self.fusion(face.flatten(0, 1), visual.flatten(0, 1)).view_as(face)
            if not has_face:
                attended = torch.zeros_like(attended)
            elif face_present is not None:
                attended = attended * face_present.to(device=device, dtype=dtype)[:, :, None, None]
            face = attended

        newline = (
            self.image_newline.to(dtype)[None, None, :].expand(batch, 1, hidden)
            if pixel_values_videos is not None or visual_embeds is not None
            else torch.zeros(batch, 1, hidden, dtype=dtype, device=device)
        )
        video_rows = torch.cat([visual.reshape(batch, t * v, hidden), newline], dim=1)
        return video_rows.reshape(-1, hidden), face.reshape(-1, hidden)

    def _audio_sequence(self, batch, input_features, audio_lengths, dtype, device):
        """Audio token features in placeholder order, (Σ_b A_b, H), A_b from tokens.audio_token_count."""
        cfg, hidden = self.config, self.config.hidden_size
        if audio_lengths is None:
            audio_lengths = torch.zeros(batch, dtype=torch.long)
        lengths = [int(n) for n in audio_lengths.tolist()]
        counts = [tokens.audio_token_count(cfg, n if n > 0 else None) for n in lengths]
        feats = None
        if input_features is not None and any(n > 0 for n in lengths):
            feats = self.audio_features(input_features).to(dtype)
        rows = []
        for b, (n, count) in enumerate(zip(lengths, counts)):
            if n > 0 and feats is None:
                raise ValueError(f"audio_lengths[{b}]={n} but no input_features were given")
            rows.append(feats[b, :count] if n > 0 else torch.zeros(count, hidden, dtype=dtype, device=device))
        return torch.cat(rows, dim=0)

    @staticmethod
    def _scatter(embeds, input_ids, token_id, features, name):
        mask = input_ids == token_id
        n_tokens, n_features = int(mask.sum()), features.shape[0]
        if n_tokens != n_features:
            raise ValueError(
                f"{name}: {n_tokens} placeholder tokens in input_ids but {n_features} feature rows; "
                "build inputs with OmniEmotionProcessor so the counts match"
            )
        return embeds.masked_scatter(mask.unsqueeze(-1).expand_as(embeds), features.to(embeds.dtype))

    def merge_multimodal(
        self,
        input_ids: torch.LongTensor,
        pixel_values_videos: torch.Tensor | None = None,
        face_pixel_values: torch.Tensor | None = None,
        face_present: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        audio_lengths: torch.Tensor | None = None,
        visual_embeds: torch.Tensor | None = None,
        face_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids (B, L) with placeholders → inputs_embeds (B, L, H)."""
        cfg = self.config
        embeds = self.get_input_embeddings()(input_ids)
        batch, dtype, device = input_ids.shape[0], embeds.dtype, embeds.device
        video, face = self._visual_sequence(batch, pixel_values_videos, face_pixel_values, face_present, dtype, device,
                                            visual_embeds, face_embeds)
        audio = self._audio_sequence(batch, input_features, audio_lengths, dtype, device)
        embeds = self._scatter(embeds, input_ids, cfg.video_token_id, video, "video")
        embeds = self._scatter(embeds, input_ids, cfg.face_token_id, face, "face")
        return self._scatter(embeds, input_ids, cfg.audio_token_id, audio, "audio")

    def has_placeholders(self, input_ids: torch.LongTensor) -> bool:
        return bool((input_ids == self.config.video_token_id).any())

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        pixel_values_videos=None,
        face_pixel_values=None,
        face_present=None,
        input_features=None,
        audio_lengths=None,
        use_cache=None,
        visual_embeds=None,
        face_embeds=None,
        **kwargs,
    ):
        if inputs_embeds is None:
            if input_ids is None:
                raise ValueError("give input_ids or inputs_embeds")
            if self.has_placeholders(input_ids):
                inputs_embeds = self.merge_multimodal(
                    input_ids, pixel_values_videos, face_pixel_values, face_present, input_features, audio_lengths,
                    visual_embeds, face_embeds,
                )
            else:
                inputs_embeds = self.get_input_embeddings()(input_ids)
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            **kwargs,
        )


class OmniEmotionForConditionalGeneration(OmniEmotionPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: OmniEmotionConfig):
        super().__init__(config)
        self.model = OmniEmotionModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        face_pixel_values: torch.Tensor | None = None,
        face_present: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        audio_lengths: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        visual_embeds: torch.Tensor | None = None,
        face_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> OmniEmotionOutput:
        """
        input_ids: (B, L) with the placeholders of `model/net/tokens.py`.
        pixel_values_videos: (B, T, 3, S, S) SigLIP-normalised frames, or None (absent).
        face_pixel_values: (B, T, 3, 224, 224) ImageNet-normalised crops, or None (absent).
        face_present: (B, T) bool, False where a frame has no face.
        input_features: (B, 128, 3000) Whisper log-mel ((B, 128, M) in the "window"
            audio context), or None.
        visual_embeds, face_embeds: (B, T, v, H) / (B, T, f, H) precomputed
            `visual_features` / `face_features` in place of the pixels (per-frame cache).
        audio_lengths: (B,) real samples per clip at 16 kHz; 0 marks an absent track.
        labels: (B, L), -100 where no loss is taken.
        """
        kwargs.pop("past_key_values", None)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            pixel_values_videos=pixel_values_videos,
            face_pixel_values=face_pixel_values,
            face_present=face_present,
            input_features=input_features,
            audio_lengths=audio_lengths,
            use_cache=use_cache,
            visual_embeds=visual_embeds,
            face_embeds=face_embeds,
            **kwargs,
        )
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None if labels is None else next_token_loss(logits, labels)
        return OmniEmotionOutput(loss=loss, logits=logits, cache=getattr(out, "cache", None),
                                 hidden_states=out.hidden_states, attentions=out.attentions)

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool | None = False, **kwargs):
        inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            for key in PREFILL_ONLY_INPUTS:
                inputs.pop(key, None)
        return inputs

    # ---- training phases -------------------------------------------------------------

    def set_trainable_phase(self, phase: int) -> list[str]:
        """Freeze everything, then unfreeze what phase 1, 2 or 3 of paper §4.4 trains.

        1: audio projector; 2: face projector; 3: the three projectors, frame embeddings,
        fusion layer, LLM decoder and LM head. Returns the trainable parameter names.
        """
        if phase not in PHASE_TRAINABLE:
            raise ValueError(f"phase must be one of {sorted(PHASE_TRAINABLE)}, got {phase!r}")
        prefixes = PHASE_TRAINABLE[phase]
        names = []
        for name, param in self.named_parameters():
            train = any(name == p or name.startswith(p + ".") for p in prefixes)
            param.requires_grad_(train)
            if train:
                names.append(name)
        return names
