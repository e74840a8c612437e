"""Turn generated text into ``{label, labels, explanation}`` (pure text, no model).

The answer formats are the training ones (``model.net.templates``):

* classification (phase 2): ``"neutral."`` — one option, a full stop;
* analysis (phase 3): ``"<explanation> Open-vocabulary labels: worried, tense, sad."``
  or, labels first, ``"Open-vocabulary labels: worried, tense, sad. <explanation>"``
  (both orders parse the same; ``reformat_answer`` turns one into the other).

A model does not always answer in format, so parsing is lenient in what it reads but
never invents: when no option can be found, ``label`` is None (a wrong answer for the
metrics), not a guess.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from model.net.templates import ANSWER_FORMATS, OV_LABELS_MARKER, reasoning_answer

# Word forms that name the same class. Option lists mix forms (DFEW "angry", MAFW
# "anger", the paper's prompts "anxious"/"helpless"), and a model may answer in either.
_FORMS: dict[str, tuple[str, ...]] = {
    "happy": ("happy", "happiness", "joy", "joyful"),
    "sad": ("sad", "sadness"),
    "angry": ("angry", "anger"),
    "surprise": ("surprise", "surprised"),
    "disgust": ("disgust", "disgusted"),
    "fear": ("fear", "fearful", "afraid", "scared"),
    "neutral": ("neutral",),
    "contempt": ("contempt", "contemptuous"),
    "anxiety": ("anxiety", "anxious"),
    "helplessness": ("helplessness", "helpless"),
    "disappointment": ("disappointment", "disappointed"),
    "worried": ("worried", "worry"),
}
# form → canonical key, for every form above
_FORM_KEY = {form: key for key, forms in _FORMS.items() for form in forms}

# "labels: a, b" written without the exact marker (case, "open vocabulary", "emotion labels")
_MARKER_RE = re.compile(
    r"(?:open[\s-]*vocabulary\s+(?:emotion\s+)?labels?|emotion\s+labels?)\s*[:：]", re.I
)
# The training format's marker must stay readable by the lenient pattern above.
if not _MARKER_RE.fullmatch(OV_LABELS_MARKER):
    raise ImportError(f"_MARKER_RE does not match the answer marker {OV_LABELS_MARKER!r}")

# An answer this short without a sentence in it is read as a bare label list.
BARE_LIST_MAX_WORDS = 12
LABEL_MAX_WORDS = 3  # "looking forward to" is 3; a longer item is a sentence, not a label


@dataclass
class ParsedAnswer:
    """What a generated answer says.

    label: the chosen option (exactly as spelled in ``options``), or, without options,
        the first open-vocabulary label / the short answer itself; None if none found.
    labels: open-vocabulary labels, lower-cased, de-duplicated, in order.
    explanation: the text before the label list, or after it when the answer opens with
        it (labels first); the whole text when there is no list.
    labels_closed: the (partial) answer holds a closed label list: the marker, at least
        one label, and the list's full stop or line break. Labels-first stopping and the
        page's streaming label go by it.
    """

    label: str | None
    labels: list[str] = field(default_factory=list)
    explanation: str = ""
    labels_closed: bool = False


def normalize_label(label: str) -> str:
    """The one label normaliser (parsing answers here, scoring in `model.evaluate.metrics`):
    lower-case, ``_`` as a space, whitespace collapsed, surrounding punctuation and
    quotes stripped. ``" Looking_Forward to. "`` → ``"looking forward to"``."""
    return " ".join(str(label).lower().replace("_", " ").split()).strip(" .!?;:\"'")


def split_labels(text: str) -> list[str]:
    """``"Worried, tense and sad."`` → ``["worried", "tense", "sad"]``.

    Splits on commas, semicolons, slashes and a final "and"; strips list brackets and
    quotes; lower-cases; drops empties and repeats.
    """
    text = text.strip().strip("[]")
    parts = re.split(r"[,;/\n]|\band\b", text)
    out: list[str] = []
    for part in parts:
        lab = normalize_label(part).strip("[]'\" ")
        if lab and lab not in out:
            out.append(lab)
    return out


def _label_list(text: str) -> tuple[re.Match, int | None] | None:
    """(last marker match, end of its label list in ``text`` or None while still open)."""
    matches = list(_MARKER_RE.finditer(text))
    if not matches:
        return None
    m = matches[-1]
    # the list ends at ". " / newline / end (a bare "." inside a label is not expected)
    end = re.search(r"\.(?:\s|$)|\n", text[m.end():])
    return m, (m.end() + end.start()) if end else None


def split_explanation(text: str) -> tuple[str, list[str]]:
    """Split an analysis answer, in either order, into (explanation, open-vocab labels).

    Uses the last label marker (``Open-vocabulary labels:``, case-insensitive, variants
    allowed); the label list ends at the first full stop or line break after it; the
    explanation is the text before the marker, or, when the answer opens with the
    list (labels first), the text after it.
    Without a marker the labels are empty and the explanation is the whole text.
    """
    return _split(text)[:2]


def _split(text: str) -> tuple[str, list[str], bool]:
    """(explanation, labels, labels_closed) of `split_explanation` and `ParsedAnswer`."""
    found = _label_list(text)
    if found is None:
        return text.strip(), [], False
    m, end = found
    if end is None:
        return text[: m.start()].strip(), split_labels(text[m.end():]), False
    before = text[: m.start()].strip()
    explanation = before or text[end:].lstrip(".").strip()
    labels = split_labels(text[m.end(): end])
    return explanation, labels, bool(labels)


def reformat_answer(text: str, answer_format: str) -> str:
    """A phase-3 answer rendered in ``answer_format`` (either order in): the trainer's
    collator renders manifest answers in the model config's order with this. Text
    without a label list or without an explanation is returned unchanged."""
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
    explanation, labels = split_explanation(text)
    if not labels or not explanation:
        return text
    return reasoning_answer(explanation, labels, answer_format)


def _option_keys(option: str) -> set[str]:
    """All normalised spellings that select this option."""
    o = normalize_label(option)
    keys = {o}
    if o in _FORM_KEY:
        keys.update(_FORMS[_FORM_KEY[o]])
    return keys


def match_option(text: str, options: Sequence[str]) -> str | None:
    """The option ``text`` names, or None.

    1. the whole (normalised) text is an option or one of its word forms;
    2. else the option mentioned earliest in the text (whole words; word forms count);
       options that are never mentioned are ignored. Ties (two options at the same
       place, e.g. "surprise" inside "pleasant surprise") go to the longer spelling.
    """
    if not options:
        raise ValueError("empty option list")
    keyed = [(opt, _option_keys(opt)) for opt in options]
    whole = normalize_label(text)
    for opt, keys in keyed:
        if whole in keys:
            return opt
    low = text.lower()
    best: tuple[int, int, str] | None = None  # (position, -length, option)
    for opt, keys in keyed:
        for key in keys:
            m = re.search(rf"(?<![a-z]){re.escape(key)}(?![a-z])", low)
            if m and (best is None or (m.start(), -len(key)) < best[:2]):
                best = (m.start(), -len(key), opt)
    return best[2] if best else None


def parse_answer(text: str, options: Sequence[str] | None = None) -> ParsedAnswer:
    """Parse a generated answer.

    Args:
        text: the model's answer.
        options: the class names offered in the prompt (phase-2 style); None for an
            open-vocabulary answer.

    Returns:
        ParsedAnswer. A short answer without a marker (``"Neutral."``, ``"worried,
        tense"``) is read as the label list itself. With options, ``label`` is one of
        them or None: the option the label list names first, else the option the
        explanation names first. Without options, ``label`` is the first
        open-vocabulary label, else None.
    """
    if not isinstance(text, str):
        raise ValueError(f"answer must be a string, got {type(text).__name__}")
    explanation, labels, closed = _split(text)
    if not labels and _is_bare_list(text):
        # "Neutral." or "worried, tense" with no marker: the answer is the label list
        # (never "closed": a streaming answer may still go on to its marker)
        labels, explanation = split_labels(text), ""
    if options is not None:
        label = None
        for lab in labels:
            label = match_option(lab, options)
            if label is not None:
                break
        if label is None:
            label = match_option(explanation, options) if explanation else None
        return ParsedAnswer(label, labels, explanation, closed)
    return ParsedAnswer(labels[0] if labels else None, labels, explanation, closed)


def _is_bare_list(text: str) -> bool:
    """A short answer with no sentence inside it: no full stop except a final one, at
    most BARE_LIST_MAX_WORDS words, and no item longer than LABEL_MAX_WORDS words."""
    body = text.strip().rstrip(".!")
    if not body or re.search(r"[.!?]", body) or len(body.split()) > BARE_LIST_MAX_WORDS:
        return False
    return all(len(item.split()) <= LABEL_MAX_WORDS for item in split_labels(body))


def parse_label_list(value: Any) -> list[str]:
    """Labels from a JSON list or a MERTools list-like string.

    Strings are read the way MERTools' ``string_to_list`` reads them, which is what its
    published EMER-OV numbers were computed with: outer brackets removed, then split on
    every quote character, keeping the pieces that are not blank or a lone comma. That
    turns ``"[\\"don't believe\\", 'doubt']"`` into ``["don", "t believe", "doubt"]``;
    we keep that quirk on purpose so scores stay comparable with theirs. A string with
    no quotes at all (``"happy, sad"``) is split on commas.

    Args:
        value: a list of strings, a list-like string, or None/NaN/"" (→ []).

    Raises:
        ValueError: any other type, or a list with non-string items.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, str) for v in value):
            raise ValueError(f"label list must hold strings, got {value!r}")
        return [v.strip() for v in value if v.strip()]
    if not isinstance(value, str):
        raise ValueError(f"labels must be a list or a list-like string, got {value!r}")
    s = value.strip()
    if s.startswith("["):
        s = s[1:]
    if s.endswith("]"):
        s = s[:-1]
    if not re.search(r"['\"]", s):
        return [p.strip() for p in s.split(",") if p.strip()]
    return [p.strip() for p in re.split(r"['\"]", s) if p.strip() not in ("", ",")]
