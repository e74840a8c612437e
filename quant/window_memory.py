"""Peak device memory of analysing one live window, beyond the weights (an estimate).

Priced from the config's shapes and the plan, for one window: 8 frames, 8 face crops,
WINDOW_S of audio, the prompt, then greedy decoding of up to ANALYSIS_MAX_NEW_TOKENS
(batch 1). Not counted: the CUDA context (~0.3–0.5 GB, driver-dependent) and allocator
fragmentation. Assumes the GPU attention path transformers picks for this model
(SDPA: flash / memory-efficient kernels, no L×L score matrix).

The analysis runs in phases; the peak is the largest of them. Each phase holds what
is retained from before plus its own largest transient. The default prices the
analyser's live path (`model.serve.analyser`, per-frame reuse, a session's first
window: every frame new); `reuse=False` the model's own forward on the pixels. Each
rule was checked against the exact tensor peak on the CPU (`bench/peak_memory.py
--tensors`: 0.5b fp32, equal to 16 bytes; tiny fp32/bf16 within 0.1%):

    inputs     processor tensors on the device: frames (T,3,S,S) fp32, crops (T,3,C,C)
               fp32, log-mel (M, 2·Sa) fp32, input_ids + attention_mask (L,) int64
    pixels     cast to the compute dtype (a copy unless fp32); live path: first gathered
               into a new fp32 tensor (frames once, crops twice)
    embeds     the looked-up input embeddings (L, H) — host embeddings send the same
               rows over, so the size does not change — held through the encoders that
               run inside the forward (all of them with reuse=False, audio in the live
               path, whose vision and face encoders run before the forward)
    vision     SigLIP on T·P patches: four (T·P, Dv) states (the embeddings' output,
               which the encoder's caller holds through the loop, the layer's input, the
               attention residual, the MLP's normed input) and any state read before the
               last layer (`vision_states` hooks it), plus one layer's largest transient
               (MLP: 2·Fv per patch, attention q/k/v/out: 4·Dv) and its largest weight
               the method dequantizes, or the projector's two (T·P, H) outputs
    face       Swin on T crops: the patch embedding and the four stage outputs kept for
               the fusion twice (contiguous (T,C,h,w) copies before downsampling, and the
               (T,L,C) states transformers captures after it, plus the last layer norm),
               one stage-1 block's MLP transient, then at the 56×56 grid the four
               upsampled stage maps, their concat and the fused map (9·fuse_dim); the
               visual features (T·v, H) are retained (twice in the live path: the cache's
               and the batch's stack)
    audio      Whisper on Sa states (1500 for the paper's 30 s context, fewer with
               `audio_context="window"`, `model.net.tokens.audio_mel_frames`): four
               (Sa, Da) states as in SigLIP + one layer's transient; the visual and face
               features are retained
    prefill    decoder on L tokens: two (L, H) embeddings (masked_scatter copies), the
               KV cache for L + G tokens, residual + one layer's transient (MLP
               3·F per token or attention), its largest weight the method dequantizes
               (`quant.methods`: bnb 4-bit, HQQ, torchao int8), and the last position's
               logits (V, fp16 + fp32; plus lm_head dequantized when its method
               dequantizes even one row: HQQ, torchao int8 weight-only); the inputs are
               counted whole (the live path has dropped the pixels by then: ≤ 19 MB over)

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


def _encoder_phases(cfg, b: int, deq: dict, t: int, held: int, reuse: bool) -> dict:
    """Bytes of the vision and face phases (`held`: what is already there), and the
    visual and face features they leave. With `reuse` (the analyser's live path,
    `model.serve.features`) a session's first window gathers all its frames into a new
    fp32 tensor (the crops twice: those with a face, then those not cached) and the
    encoders run before the model's forward; their features stay in the cache and are
    stacked once more for the batch."""
    from model.net import tokens

    vc, fc = cfg.vision_config, cfg.face_config
    s, p, crop = vc.image_size, (vc.image_size // vc.patch_size) ** 2, fc.image_size
    cast = b if b != FP32 else 0  # the processor's fp32 pixels cast to the compute dtype: a copy unless fp32
    # SigLIP: the embeddings' output (held by the encoder's caller through the loop), the
    # layer's input, the attention residual, the MLP's normed input, and every state read
    # at a layer before the last (kept by `vision_states`'s hook through the rest)
    layers = cfg.base_config.vision_feature_layer
    layers = [layers] if isinstance(layers, int) else list(layers)
    earlier = sum(1 for k in layers if k % (vc.num_hidden_layers + 1) != vc.num_hidden_layers)
    states = (4 + earlier) * t * p * vc.hidden_size * b
    layer = t * p * max(2 * vc.intermediate_size, 4 * vc.hidden_size) * b + deq.get("vision", 0)
    projector = 2 * t * p * cfg.hidden_size * b + deq.get("projectors", 0)
    vision = held + t * 3 * s * s * (cast + reuse * FP32) + states + max(layer, projector)
    visual_out = (1 + reuse) * tokens.visual_token_count(cfg) * cfg.hidden_size * b

    # Swin on T crops: the patch embedding and every stage's output kept for the fusion
    # twice: as contiguous (T, C, h, w) copies (`reshaped_hidden_states`, before
    # downsampling) and as the (T, L, C) states transformers captures for
    # `hidden_states` (after downsampling: the next stage's size), plus the last
    # stage's layer norm; then the fusion at the stage-1 grid
    grid = crop // SWIN_PATCH
    dims = [fc.embed_dim * 2**i for i in range(len(fc.depths))]
    maps = [t * (grid // 2**i) ** 2 * d * b for i, d in enumerate(dims)]
    kept = 2 * maps[0] + sum(maps) + sum(maps[1:]) + 2 * maps[-1]
    block = 2 * t * grid * grid * SWIN_MLP_RATIO * dims[0] * b + deq.get("face", 0)
    # each stage projected and upsampled to the stage-1 grid, their concat, the fused map
    fusion = t * grid * grid * (2 * len(dims) + 1) * fc.fuse_dim * b
    face = held + visual_out + t * 3 * crop * crop * (cast + 2 * reuse * FP32) + kept + max(block, fusion)
    face_out = (1 + reuse) * tokens.face_token_count(cfg) * cfg.hidden_size * b
    return {"vision": vision, "face": face, "visual_out": visual_out, "face_out": face_out}


def _audio_encoder_bytes(ac, mel_frames: int, b: int, deq: dict) -> int:
    """Whisper over Sa = mel_frames / 2 states, inside the model's forward: the conv
    output + positions (held by the encoder's caller through the loop), the layer's
    input, the attention residual, the MLP's normed input, one layer's transient."""
    sa, da = mel_frames // 2, ac.d_model
    a_layer = sa * max(2 * ac.encoder_ffn_dim, 4 * da) * b + deq.get("audio", 0)
    conv = ac.num_mel_bins * mel_frames * b + da * mel_frames * b
    return 4 * sa * da * b + max(a_layer, conv)


def _prefill_bytes(tc, n: int, h: int, b: int, deq: dict, head_deq: int) -> int:
    """The decoder's prefill of n tokens beyond its inputs, embeddings and KV cache: two
    hidden states, one layer's largest transient (MLP or attention projections) and
    the last position's logits only (generation asks for logits_to_keep=1: a 4-bit
    bitsandbytes lm_head then runs as a gemv and dequantizes nothing)."""
    heads_dim = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
    attn = n * (2 * h + 2 * tc.num_key_value_heads * heads_dim) * b
    d_layer = max(3 * n * tc.intermediate_size * b, attn) + deq.get("llm", 0)
    logits = tc.vocab_size * (b + FP32) + head_deq
    return 2 * n * h * b + d_layer + logits


def window_peak(model, plan: QuantPlan, new_tokens: int | None = None, prompt_tokens: int = PROMPT_TOKENS,
                window_s: float = WINDOW_S, reuse: bool = True) -> dict:
    """The estimate for `model` (the float model, typically on the meta device: only
    shapes are read) under `plan`; `reuse`: the analyser's live path (per-frame
    reuse, the default), False: the model's own forward on the window's pixels
    (`model.serve.generate.encode` + `generate`). Returns {"tokens", "kv_cache",
    "phases" (bytes per phase), "peak" (the largest), "peak_phase"}."""
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
    from model.net import tokens

    # Whisper's input: 3000 mel frames (30 s) in the paper's audio context, the window's
    # own frames with audio_context="window"; its encoder states are half as many
    mel_frames = tokens.audio_mel_frames(cfg, int(round(window_s * AUDIO_RATE)))
    inputs = (t * 3 * (vc.image_size**2 + fc.image_size**2) + ac.num_mel_bins * mel_frames) * FP32 + 2 * n * INT64
    embeds = n * h * b
    enc = _encoder_phases(cfg, b, deq, t, inputs + (0 if reuse else embeds), reuse)

    audio = inputs + embeds + enc["visual_out"] + enc["face_out"] + _audio_encoder_bytes(ac, mel_frames, b, deq)
    kv = kv_cache_bytes(cfg, plan, n, g)
    prefill = inputs + 2 * embeds + kv + _prefill_bytes(tc, n, h, b, deq, head_deq)
    phases = {"vision": enc["vision"], "face": enc["face"], "audio": audio, "prefill": prefill}
    peak_phase = max(phases, key=phases.get)
    return {
        "tokens": {**tok, "generated": g},
        "kv_cache": {"bytes_per_token": kv_bytes_per_token(cfg, plan), "tokens": n + g, "bytes": kv},
        "phases": phases,
        "peak": phases[peak_phase],
        "peak_phase": peak_phase,
    }
