"""Tokenizers: Omni-Emotion's special tokens, and a real (tiny) fast tokenizer built offline.

The modality wrappers `<vi_start> <vi_end> <au_start> <au_end>` and the placeholders
`<video> <face> <audio>` are registered as real special tokens (never split, never
produced by BPE); the model's embedding matrix is resized to match.
"""
from __future__ import annotations

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
IMAGE, VIDEO, FACE, AUDIO = "<image>", "<video>", "<face>", "<audio>"
WRAPPERS = ("<vi_start>", "<vi_end>", "<au_start>", "<au_end>")
OMNI_TOKENS = (FACE, AUDIO, *WRAPPERS)  # what we add to LLaVA-OneVision's tokenizer

# Qwen2's ChatML template, as LLaVA-OneVision uses it.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TINY_VOCAB = 1024
# Enough English for a BPE that tokenises prompts and answers in a sensible number of pieces.
_CORPUS = [
    "You are a helpful assistant.",
    "As an emotional recognition expert, when you observe the video, what is the primary emotion exhibited by the characters?",
    "Which emotion exhibited by the characters can you confirm as the primary emotion?",
    "What insights can we gain about the character's emotional state from their actions and facial expressions, "
    "as well as the accompanying audio and visual cues in the video? Please provide a detailed analysis.",
    "Listen to this audio clip and provide its caption in English. Please describe the audio in English.",
    "Give me the transcription of the speech you heard. Recognize the speech and write it down.",
    "happy sad neutral angry surprise disgust fear anger happiness sadness contempt anxiety helplessness disappointment",
    "frustrated tearful excited calm nervous worried relieved confused bored proud ashamed hopeful lonely",
    "The person frowns, the voice trembles and the eyes are tearful, so the emotion is sadness.",
    "The character smiles broadly and laughs; the tone of voice is bright and lively, which suggests happiness.",
    "In the video, the man raises his eyebrows and his mouth opens, the scene is a busy street at night.",
    "Open-vocabulary labels: worried, nervous, tense. Label: fear.",
    "Wind and a man speaking are heard, accompanied by buzzing and ticking.",
    "0 1 2 3 4 5 6 7 8 9 . , ; : ! ? ' \" ( ) - the a an and or of to in on with is are was were",
]


def _special(token: str) -> AddedToken:
    return AddedToken(token, special=True, normalized=False, single_word=False, lstrip=False, rstrip=False)


def add_omni_special_tokens(tokenizer) -> int:
    """Register Omni-Emotion's tokens on `tokenizer` (idempotent); returns how many were new.
    The `<video>` placeholder must already exist (LLaVA-OneVision's tokenizer has it)."""
    if tokenizer.convert_tokens_to_ids(VIDEO) in (None, tokenizer.unk_token_id):
        raise ValueError(f"tokenizer has no {VIDEO} token; is it LLaVA-OneVision's?")
    new = [t for t in OMNI_TOKENS if t not in tokenizer.get_vocab()]
    return tokenizer.add_tokens([_special(t) for t in new], special_tokens=True) if new else 0


def special_token_ids(tokenizer) -> dict[str, int]:
    """The config fields that carry each special token's id."""
    ids = {
        "face_token_id": FACE,
        "audio_token_id": AUDIO,
        "vi_start_token_id": WRAPPERS[0],
        "vi_end_token_id": WRAPPERS[1],
        "au_start_token_id": WRAPPERS[2],
        "au_end_token_id": WRAPPERS[3],
    }
    vocab = tokenizer.get_vocab()
    missing = [t for t in ids.values() if t not in vocab]
    if missing:
        raise ValueError(f"tokenizer lacks Omni-Emotion tokens {missing}; call add_omni_special_tokens first")
    return {field: vocab[token] for field, token in ids.items()}


def apply_token_ids(config, tokenizer) -> None:
    """Write the tokenizer's special-token ids into `config` (placeholders, wrappers, pad/eos)."""
    for field, value in special_token_ids(tokenizer).items():
        setattr(config, field, value)
    vocab = tokenizer.get_vocab()
    config.base_config.video_token_index = vocab[VIDEO]
    if IMAGE in vocab:
        config.base_config.image_token_index = vocab[IMAGE]
    text = config.text_config
    text.pad_token_id = tokenizer.pad_token_id
    text.eos_token_id = tokenizer.eos_token_id
    if text.vocab_size < len(tokenizer):
        raise ValueError(f"decoder vocab_size {text.vocab_size} < tokenizer size {len(tokenizer)}; resize embeddings")


def build_tiny_tokenizer(vocab_size: int = TINY_VOCAB, omni_tokens: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained here on a few sentences, with Qwen2's chat tokens and
    template: a real fast tokenizer for tests, built with no download. Without
    `omni_tokens` it stands in for LLaVA-OneVision's own tokenizer."""
    base_special = [PAD, IM_START, IM_END, IMAGE, VIDEO]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=base_special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        unk_token=None,
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    if omni_tokens:
        add_omni_special_tokens(fast)
    return fast


# Qwen2's tokenizer (what LLaVA-OneVision-0.5B/7B ship): 151,643 byte-level BPE ids, then
# <|endoftext|> 151643, <|im_start|> 151644, <|im_end|> 151645; LLaVA-OneVision adds
# <image> 151646 and <video> 151647 (`model.net.config.LLAVA_OV_*_TOKEN_ID`).
QWEN2_BPE_SIZE = 151_643


def build_sized_tokenizer(bpe_size: int = QWEN2_BPE_SIZE, omni_tokens: bool = True) -> PreTrainedTokenizerFast:
    """A stand-in for LLaVA-OneVision's tokenizer, built offline: `bpe_size` ordinary ids
    (the tiny BPE's merges, so prompts tokenise into real pieces, then filler pieces that
    BPE never produces but that decode to text), then Qwen2's three chat tokens and
    `<image>`, `<video>` at Qwen2's / LLaVA-OneVision's ids (151643..151647 at the default
    size) and, with `omni_tokens`, Omni-Emotion's six. For random real-size checkpoints
    (`model.checkpoint.build --random`): the vocabulary has the real size and layout, the
    pieces are not Qwen2's."""
    small = build_tiny_tokenizer(omni_tokens=False)
    state = __import__("json").loads(small.backend_tokenizer.to_str())
    specials = [PAD, IM_START, IM_END, IMAGE, VIDEO]
    vocab = {piece: i for piece, i in state["model"]["vocab"].items() if piece not in specials}
    vocab = {piece: rank for rank, (piece, _) in enumerate(sorted(vocab.items(), key=lambda kv: kv[1]))}
    if bpe_size < len(vocab):
        raise ValueError(f"bpe_size {bpe_size} is below the base BPE's {len(vocab)} pieces")
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["model"]["merges"]]
    n = 0
    while len(vocab) < bpe_size:  # fillers: ASCII pieces with no merge path; ids past every real piece
        piece = f"~{n}~"
        if piece not in vocab:
            vocab[piece] = len(vocab)
        n += 1
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([_special(t) for t in specials])  # ids bpe_size .. bpe_size + 4
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=PAD, unk_token=None,
                                   padding_side="left")
    fast.chat_template = CHAT_TEMPLATE
    if omni_tokens:
        add_omni_special_tokens(fast)
    return fast
