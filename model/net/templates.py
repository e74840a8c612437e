"""The paper's instruction templates (§4.4 and §8) and the answer formats.

Every builder draws a template per sample from a seeded ``random.Random`` so a manifest
is reproducible, and shuffles the option list per sample so the model cannot learn a
position prior. The answer formats defined here are the ones ``model.net.answers`` parses
back: keep the two in step (``tests/test_analysis.py`` round-trips them).
"""
from __future__ import annotations

import random
from collections.abc import Sequence

# --- phase 1: audio alignment (§8). Captioning and transcription are separate pools so
# a caption dataset never asks for a transcript (the dataset decides the task).
AUDIO_CAPTION_INSTRUCTIONS = (
    "Listen to this audio clip and provide its caption in English.",
    "Could you summarise what's happening in this audio?",
    "Please describe the audio in English.",
    "Describe the following audio in a caption.",
)
ASR_INSTRUCTIONS = (
    "Write down the content of the speech you heard.",
    "Give me the transcription of the speech you heard.",
    "Please transcribe the speech into a written format.",  # paper's "lease" typo fixed
    "Recognize the speech and write it down in a written format.",
    "Recognize the speech and give me the transcription.",
)

# --- phase 2: facial alignment, classification QA (§4.4 example + §8 list). The option
# list follows the question, comma separated, ending with a full stop as in §4.4.
CLASSIFICATION_QUESTIONS = (
    "As an emotional recognition expert, when you observe the video, what is the primary "
    "emotion exhibited by the characters?",
    "Which emotion exhibited by the characters can you confirm as the primary emotion?",
    "What primary emotion conveyed by the characters can you clearly identify?",
    "Which emotion can you recognize being expressed by the characters?",
)

# --- phase 3: multimodal instruction tuning (§8).
REASONING_INSTRUCTIONS = (
    "What insights can we gain about the character's emotional state from their actions "
    "and facial expressions, as well as the accompanying audio and visual cues in the "
    "video? Please provide a detailed analysis.",
    "Based on the character's physical actions and emotional expressions, along with the "
    "video's sound and visual context, what can we deduce about their emotional state? "
    "Please elaborate thoroughly.",
    "What can we interpret about the character's emotional state through their expressive "
    "actions and visual cues, as well as the audio elements present in the video? Please "
    "provide an in-depth analysis.",
)

# The phase-3 answer holds this marker and a comma list of labels, then a full stop, in
# one of two orders (the model config's `answer_format`):
#   explanation_first (the paper): "<explanation> Open-vocabulary labels: worried, tense, sad."
#   labels_first (live: the label is out after ~10 tokens):
#                                  "Open-vocabulary labels: worried, tense, sad. <explanation>"
OV_LABELS_MARKER = "Open-vocabulary labels:"
ANSWER_FORMATS = ("explanation_first", "labels_first")
DEFAULT_ANSWER_FORMAT = "explanation_first"

# Class lists in the datasets' own order (index i ↔ label id i+1 in their label files).
DFEW_CLASSES = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
MAFW_CLASSES = (
    "anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise",
    "contempt", "anxiety", "helplessness", "disappointment",
)


def audio_instruction(task: str, rng: random.Random) -> str:
    """A random phase-1 instruction: ``task`` is ``"audio_caption"`` or ``"asr"``."""
    if task == "audio_caption":
        return rng.choice(AUDIO_CAPTION_INSTRUCTIONS)
    if task == "asr":
        return rng.choice(ASR_INSTRUCTIONS)
    raise ValueError(f"audio task must be 'audio_caption' or 'asr', got {task!r}")


def classification_prompt(options: Sequence[str], rng: random.Random) -> tuple[str, list[str]]:
    """A random phase-2 question with the options shuffled.

    Args:
        options: the dataset's class names (at least 2, no duplicates).
        rng: the builder's seeded generator.

    Returns:
        (prompt, shuffled options), e.g. ``("As an ... characters? fear, happy, sad.",
        ["fear", "happy", "sad"])``.
    """
    opts = [str(o).strip() for o in options]
    if len(opts) < 2 or len(set(opts)) != len(opts) or not all(opts):
        raise ValueError(f"need at least 2 distinct non-empty options, got {list(options)!r}")
    rng.shuffle(opts)
    question = rng.choice(CLASSIFICATION_QUESTIONS)
    return f"{question} {', '.join(opts)}.", opts


def classification_answer(label: str) -> str:
    """Phase-2 answer: the label and a full stop (§4.4: ``"neutral."``)."""
    label = label.strip()
    if not label:
        raise ValueError("empty label")
    return f"{label}."


def reasoning_instruction(rng: random.Random) -> str:
    """A random phase-3 instruction."""
    return rng.choice(REASONING_INSTRUCTIONS)


def reasoning_answer(explanation: str, labels: Sequence[str], answer_format: str = DEFAULT_ANSWER_FORMAT) -> str:
    """Phase-3 answer: explanation, then ``Open-vocabulary labels: a, b, c.``; with
    ``answer_format="labels_first"`` the label sentence comes first.

    Labels are lower-cased and de-duplicated (order kept); commas inside a label would
    break the list, so they are rejected.
    """
    explanation = " ".join(explanation.split())
    if not explanation:
        raise ValueError("empty explanation")
    clean: list[str] = []
    for lab in labels:
        lab = " ".join(str(lab).split()).lower().strip(" .")
        if "," in lab:
            raise ValueError(f"label {lab!r} contains a comma")
        if lab and lab not in clean:
            clean.append(lab)
    if not clean:
        raise ValueError(f"no open-vocabulary labels in {list(labels)!r}")
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
    if explanation[-1] not in ".!?":
        explanation += "."
    label_line = f"{OV_LABELS_MARKER} {', '.join(clean)}."
    if answer_format == "labels_first":
        return f"{label_line} {explanation}"
    return f"{explanation} {label_line}"


def caption_answer(text: str) -> str:
    """Phase-1 answer: the caption/transcript with whitespace normalised, capitalised,
    ending with punctuation (VGGSound labels like "people marching" become sentences)."""
    text = " ".join(text.split())
    if not text:
        raise ValueError("empty caption/transcript")
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?\"'" else text + "."


def options_from_prompt(prompt: str) -> list[str] | None:
    """Inverse of ``classification_prompt``: the option list of a phase-2 question, or
    None when ``prompt`` is not one (used when a manifest line has no ``options``)."""
    text = " ".join(prompt.split())
    for question in CLASSIFICATION_QUESTIONS:
        if text.startswith(question):
            tail = text[len(question):].strip().rstrip(".")
            opts = [o.strip() for o in tail.split(",") if o.strip()]
            return opts if len(opts) >= 2 else None
    return None
