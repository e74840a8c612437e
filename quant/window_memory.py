"""Peak device memory of analysing one live window, beyond the weights (an estimate).

Priced from the config's shapes and the plan, for one window: 8 frames, 8 face crops,
WINDOW_S of audio, the prompt, then greedy decoding of up to ANALYSIS_MAX_NEW_TOKENS
(batch 1). Not counted: the CUDA context (~0.3–0.5 GB, driver-dependent) and allocator
fragmentation. Assumes the GPU attention path transformers picks for this model
(SDPA: flash / memory-efficient kernels, no L×L score matrix).

The analysis runs in phases; the peak is the largest of them. Each phase holds what
is retained from before plus its own largest transient:

    inputs     processor tensors on the device: frames (T,3,S,S) fp32, crops (T,3,C,C)
               fp32, log-mel (M, 2·Sa) fp32, input_ids + attention_mask (L,) int64
    embeds     the looked-up input embeddings (L, H) — host embeddings send the same
               rows over, so the size does not change — held through the encoders
    vision     SigLIP on T·P patches: the running state and the one read
               (`vision_states` hooks it; 2·T·P·Dv), plus one layer's
               largest transient (MLP: 2·Fv per patch, attention q/k/v/out: 4·Dv),
               plus its largest weight the method dequantizes
    face       Swin on T crops: the patch embedding and the four stage outputs kept for
               the fusion, one stage-1 block's MLP transient, then at the 56×56 grid the
               four upsampled stage maps, their concat and the fused map (9·fuse_dim);
               the pooled visual features (T·v, H) are retained
    audio      Whisper on Sa states (1500 for the paper's 30 s context, fewer with
               `audio_context="window"`, `model.net.tokens.audio_mel_frames`): two
               (Sa, Da) residual streams + one layer's transient; the visual and face
               features are retained
    prefill    decoder on L tokens: two (L, H) embeddings (masked_scatter copies), the
               KV cache for L + G tokens, residual + one layer's transient (MLP
               3·F per token or attention), its largest weight the method dequantizes
               (`quant.methods`: bnb 4-bit, HQQ, torchao int8), and the last position's
               logits (V, fp16 + fp32; plus lm_head dequantized when its method
               dequantizes even one row: HQQ, torchao int8 weight-only)

KV cache per token: layers × 2 × kv_heads × head_dim × dtype bytes (7B fp16: 57,344 B);
a plan's quantized KV cache (`kv_cache`) is priced by `quant.kv_cache.window_bytes`.
Token counts come from `model.net.tokens` (the processor's own rule); the prompt's text
tokens (chat template + the default analysis prompt) are `PROMPT_TOKENS`.
"""
from __future__ import annotations

from live.contract.media import AUDIO_RATE, N_FRAMES, WINDOW_S

from .plans import BYTES_PER_ELEMENT, QuantPlan

PROMPT_TOKENS = 96  # text tokens of one turn: chat template + DEFAULT_PROMPT (~70), rounded up
WRAPPER_TOKENS = 4  # <vi_start> <vi_end> <au_start> <au_end>
FP32 = 4
INT64 = 8
SWIN_PATCH = 4  # Swin's patch embedding stride: 224 px crops → 56×56 stage-1 grid
SWIN_MLP_RATIO = 4


def window_tokens(config, prompt_tokens: int = PROMPT_TOKENS, window_s: float = WINDOW_S) -> dict:
    """Prefill tokens of one window, by part (`model.net.tokens`), and their sum."""
    from model.net import tokens

    parts = {
        "visual": tokens.visual_token_count(config),
        "face": tokens.face_token_count(config),
        "audio": tokens.audio_token_count(config, int(round(window_s * AUDIO_RATE))),
        "wrappers": WRAPPER_TOKENS,
        "prompt": prompt_tokens,
    }
    parts["total"] = sum(parts.values())
    return parts


def kv_bytes_per_token(config, plan: QuantPlan) -> int:
    """layers × (K and V) × kv_heads × head_dim × bytes of the compute dtype."""
    text = config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return text.num_hidden_layers * 2 * text.num_key_value_heads * head_dim * BYTES_PER_ELEMENT[plan.compute_dtype]


def largest_dequantized(model, plan: QuantPlan, rows: int) -> dict[str, int]:
    """{slot: elements of its largest quantized weight that its method dequantizes whole
    into the compute dtype for an input of `rows` rows} (`quant.methods`: bitsandbytes
    4-bit for more than one row, HQQ and torchao int8 weight-only always)."""
    from .layout import quant_targets, slot_of
    from .methods import method_of

    out: dict[str, int] = {}
    for name, precision in quant_targets(model, plan).items():
        if method_of(precision).dequantizes(precision, rows):
            slot = slot_of(name)
            out[slot] = max(out.get(slot, 0), model.get_submodule(name).weight.numel())
    return out


def kv_cache_bytes(config, plan: QuantPlan, prefill: int, generated: int) -> int:
    """The KV cache's largest size over a window (`quant.kv_cache.window_bytes`: 16-bit,
    or the plan's quantized cache with its residual and decode transient)."""
    from .kv_cache import window_bytes

    return window_bytes(config.text_config, plan, prefill, generated)


def window_peak(model, plan: QuantPlan, new_tokens: int | None = None, prompt_tokens: int = PROMPT_TOKENS,
                window_s: float = WINDOW_S) -> dict:
    """The estimate for `model` (the float model, typically on the meta device: only
    shapes are read) under `plan`. Returns {"tokens", "kv_cache", "phases" (bytes per
    phase), "peak" (the largest), "peak_phase"}."""
    from model.serve.generate import ANALYSIS_MAX_NEW_TOKENS

    cfg = model.config
    g = ANALYSIS_MAX_NEW_TOKENS if new_tokens is None else new_tokens
    b = BYTES_PER_ELEMENT[plan.compute_dtype]
    deq = {slot: n * b for slot, n in largest_dequantized(model, plan, rows=2).items()}
    # the last position's logits come from a one-row input: only methods that always
    # dequantize (HQQ, torchao int8 weight-only) materialise lm_head's weight for it
    head_deq = largest_dequantized(model, plan, rows=1).get("lm_head", 0) * b
    t = cfg.num_frames if getattr(cfg, "num_frames", None) else N_FRAMES
    h = cfg.hidden_size
    tok = window_tokens(cfg, prompt_tokens, window_s)
    n = tok["total"]

    vc, ac, fc, tc = cfg.vision_config, cfg.audio_config, cfg.face_config, cfg.text_config
    s, p = vc.image_size, (vc.image_size // vc.patch_size) ** 2
    crop = fc.image_size
    from model.net import tokens

    # Whisper's input: 3000 mel frames (30 s) in the paper's audio context, the window's
    # own frames with audio_context="window"; its encoder states are half as many
    mel_frames = tokens.audio_mel_frames(cfg, int(round(window_s * AUDIO_RATE)))
    inputs = (t * 3 * s * s + t * 3 * crop * crop + ac.num_mel_bins * mel_frames) * FP32 + 2 * n * INT64
    embeds = n * h * b
    held = inputs + embeds

    # vision: SigLIP over T·P patches: the running state + the hooked layer's state(s)
    read = 1 if isinstance(cfg.base_config.vision_feature_layer, int) else len(cfg.base_config.vision_feature_layer)
    hidden_states = (1 + read) * t * p * vc.hidden_size * b
    layer = t * p * max(2 * vc.intermediate_size, 4 * vc.hidden_size) * b + deq.get("vision", 0)
    projector = 2 * t * p * h * b + deq.get("projectors", 0)
    vision = held + t * 3 * s * s * b + hidden_states + max(layer, projector)
    visual_out = tokens.visual_token_count(cfg) * h * b

    # face: Swin stages on T crops, then the fusion at the stage-1 grid
    grid = crop // SWIN_PATCH
    dims = [fc.embed_dim * 2**i for i in range(len(fc.depths))]
    # kept for the fusion (output_hidden_states): the patch embedding and every stage's output
    stages = t * grid * grid * dims[0] * b + sum(t * (grid // 2**i) ** 2 * d * b for i, d in enumerate(dims))
    block = 2 * t * grid * grid * SWIN_MLP_RATIO * dims[0] * b + deq.get("face", 0)
    # each stage projected and upsampled to the stage-1 grid, their concat, the fused map
    fusion = t * grid * grid * (2 * len(dims) + 1) * fc.fuse_dim * b
    face = held + visual_out + t * 3 * crop * crop * b + stages + max(block, fusion)
    face_out = tokens.face_token_count(cfg) * h * b

    # audio: Whisper over Sa = mel_frames / 2 states
    sa, da = mel_frames // 2, ac.d_model
    a_layer = sa * max(2 * ac.encoder_ffn_dim, 4 * da) * b + deq.get("audio", 0)
    conv = ac.num_mel_bins * mel_frames * b + da * mel_frames * b
    audio = held + visual_out + face_out + 2 * sa * da * b + max(a_layer, conv)

    # decoder prefill + the KV cache of every token the window will hold
    kv_token = kv_bytes_per_token(cfg, plan)
    kv = kv_cache_bytes(cfg, plan, n, g)
    heads_dim = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
    attn = n * (2 * h + 2 * tc.num_key_value_heads * heads_dim) * b
    d_layer = max(3 * n * tc.intermediate_size * b, attn) + deq.get("llm", 0)
    # the last position's logits only (generation asks for logits_to_keep=1): a 4-bit
    # bitsandbytes lm_head then runs as a gemv and dequantizes nothing
    logits = tc.vocab_size * (b + FP32) + head_deq
    prefill = inputs + 2 * embeds + kv + 2 * n * h * b + d_layer + logits

    phases = {"vision": vision, "face": face, "audio": audio, "prefill": prefill}
    peak_phase = max(phases, key=phases.get)
    return {
        "tokens": {**tok, "generated": g},
        "kv_cache": {"bytes_per_token": kv_token, "tokens": n + g, "bytes": kv},
        "phases": phases,
        "peak": phases[peak_phase],
        "peak_phase": peak_phase,
    }
