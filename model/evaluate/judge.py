"""A judge LLM behind an OpenAI-compatible chat endpoint (AffectGPT used GPT-3.5).

Two jobs: group open-vocabulary labels into synonym sets (EMER-OV with ``--judge``) and
score an explanation against the reference (EMER reasoning, clue and label overlap
1–10). The calls go through the project's one model-server client,
``model.data.curate.endpoint.Endpoint`` (retries, timeouts, answers cached on disk, so a
rerun costs nothing and gives the same numbers). An answer that does not parse is raised as
``JudgeAnswerError`` carrying the raw text — the caller reports it; nothing here
guesses a value. Malformed answers are not cached, so a later run asks again.
"""
from __future__ import annotations

import ast
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from model.data.curate.endpoint import (AnswerError, Endpoint, EndpointError, answer_int, json_object, schema_format,
                                        strip_wrapping)
from model.evaluate.metrics import parse_group_lists

T = TypeVar("T")

DEFAULT_MODEL = "gpt-3.5-turbo"
DEFAULT_RETRIES = 4  # attempts after the first
DEFAULT_TIMEOUT_S = 60.0  # per HTTP request
MAX_TOKENS = 1000  # MERTools' setting for the synonym call
SCORE_MIN, SCORE_MAX = 1, 10
API_KEY_ENV = "JUDGE_API_KEY"  # sent as a Bearer token when set (local servers need none)

# The answers' JSON schemas, sent as `response_format` to servers that take it. The
# grouping answer is MERTools' list of lists; a schema's top level must be an object
# (OpenAI), so a constrained server answers {"groups": [[...], ...]}, which
# `parse_groups_answer` reads too.
GROUPS_FORMAT = schema_format("synonym_groups", {
    "type": "object", "additionalProperties": False, "required": ["groups"],
    "properties": {"groups": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}}}})
SCORES_FORMAT = schema_format("overlap_scores", {
    "type": "object", "additionalProperties": False, "required": ["clue_overlap", "label_overlap"],
    "properties": {k: {"type": "integer", "minimum": SCORE_MIN, "maximum": SCORE_MAX}
                   for k in ("clue_overlap", "label_overlap")}})

JudgeError = EndpointError  # the endpoint could not be reached / kept failing
JudgeAnswerError = AnswerError  # answered, but not in the asked format (``.answer``: raw text)


class JudgeClient:
    """Cached, retrying judge: one user prompt in, the answer text out.

    Args:
        url: endpoint (``http://host:port``, ``.../v1`` or ``.../v1/chat/completions``).
        model: model name sent in the request.
        cache_dir: folder for cached answers; None = no cache.
        retries: extra attempts after a failed request.
        timeout_s: per-request timeout.
    """

    def __init__(self, url: str, model: str = DEFAULT_MODEL, cache_dir: str | Path | None = None,
                 retries: int = DEFAULT_RETRIES, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.endpoint = Endpoint(url, model, cache_dir=cache_dir, retries=retries, timeout_s=timeout_s,
                                 api_key_env=API_KEY_ENV, max_tokens=MAX_TOKENS)
        self.url, self.model = self.endpoint.url, model

    @property
    def requests(self) -> int:
        """Requests the server answered (tests and logs read it)."""
        return self.endpoint.requests

    @staticmethod
    def _messages(prompt: str) -> list[dict]:
        return [{"role": "user", "content": prompt}]

    def complete(self, prompt: str) -> str:
        """The judge's answer to ``prompt`` (uncached raw text). Raises JudgeError."""
        return self.endpoint.complete(self._messages(prompt))

    def ask(self, prompt: str, parse: Callable[[str], T], response_format: dict | None = None) -> T:
        """Ask (or read the cache) and parse the answer. ``response_format``: the
        answer's JSON schema (`schema_format`), for servers that take one.

        Raises:
            JudgeAnswerError: ``parse`` rejected the answer (not cached).
            JudgeError: the endpoint kept failing.
        """
        try:
            return self.endpoint.ask(self._messages(prompt), parse, response_format=response_format)
        except AnswerError as e:
            raise JudgeAnswerError(f"malformed judge answer ({e.reason}): {e.answer[:200]!r}", e.answer,
                                   e.reason) from None


# ------------------------------------------------------------------ synonym grouping
def synonym_prompt(labels: Sequence[str]) -> str:
    """MERTools' grouping prompt (AffectGPT's EMER-OV judge), with the label set."""
    return (
        "Please assume the role of an expert in the field of emotions. We provide a set of "
        "emotions. Please group the emotions, with each group containing emotions with the "
        "same meaning. Directly output the results. The output format should be a list "
        "containing multiple lists. Input: ['Agree', 'agreement', 'Relaxed', 'acceptance', "
        "'pleasant', 'relaxed', 'Accept', 'positive', 'Happy'] Output: [['Agree', "
        "'agreement', 'Accept', 'acceptance'], ['Relaxed', 'relaxed'],['pleasant', "
        f"'positive', 'Happy']] Input: {list(labels)} Output:"
    )


def parse_groups_answer(answer: str) -> list[list[str]]:
    """A grouping answer → list of lists of strings. Strict: the answer must be a
    bracketed list of lists, or ``{"groups": <that>}`` (what a server keeping to
    GROUPS_FORMAT sends); code fences and an "Output:" prefix are tolerated.

    Raises:
        ValueError: anything else.
    """
    s = strip_wrapping(answer)
    if s.startswith("{"):  # the schema's form (GROUPS_FORMAT)
        groups = parse_group_lists(json_object(s).get("groups"))
        if not groups:
            raise ValueError('"groups" is not a non-empty list of lists')
        return groups
    if not (s.startswith("[") and s.endswith("]")):
        raise ValueError("not a list of lists")
    try:
        value = ast.literal_eval(s)
    except (ValueError, SyntaxError):
        value = None
    if value is None:
        # MERTools' own reader copes with unquoted / oddly quoted inner lists
        if not re.match(r"^\[\s*\[", s):
            raise ValueError("not a list of lists")
        groups = parse_group_lists(s)
    else:
        groups = parse_group_lists(value if isinstance(value, list) else None)
    if not groups:
        raise ValueError("no groups")
    return groups


def group_synonyms(client: JudgeClient, gold: Sequence[str], pred: Sequence[str]) -> list[list[str]]:
    """Ask the judge to group the union of gold and predicted labels (lower-cased,
    sorted so the prompt — and so the cache key — does not depend on order)."""
    labels = sorted({w.strip().lower() for w in [*gold, *pred] if w.strip()})
    return client.ask(synonym_prompt(labels), parse_groups_answer, GROUPS_FORMAT)


# ------------------------------------------------------------------- reasoning scores
def reasoning_prompt(reference: str, prediction: str) -> str:
    """Score the overlap of a predicted explanation with the reference (EMER)."""
    return (
        "Please act as an expert in the field of emotions. We provide a reference "
        "description of a character's emotional state in a video, with the visual, facial "
        "and acoustic clues that support it, and a predicted description of the same video. "
        "Score two things on an integer scale from 1 (no overlap) to 10 (complete overlap): "
        "clue_overlap, how well the predicted emotion-related clues (facial expressions, "
        "actions, tone of voice, speech content, scene) match the reference clues; and "
        "label_overlap, how well the emotional states summarised in the prediction match "
        "those of the reference. Output only a JSON object of the form "
        '{"clue_overlap": <int>, "label_overlap": <int>}.\n'
        f"Reference: {reference.strip()}\n"
        f"Prediction: {prediction.strip()}\n"
        "Output:"
    )


def parse_scores_answer(answer: str) -> tuple[int, int]:
    """``{"clue_overlap": 7, "label_overlap": 6}`` (possibly fenced, possibly with text
    around the object) → (7, 6).

    Raises:
        ValueError: no single JSON object with both keys as integers in 1..10.
    """
    obj = json_object(answer)
    return (answer_int(obj, "clue_overlap", SCORE_MIN, SCORE_MAX),
            answer_int(obj, "label_overlap", SCORE_MIN, SCORE_MAX))


def score_reasoning(client: JudgeClient, reference: str, prediction: str) -> tuple[int, int]:
    """(clue_overlap, label_overlap), each 1..10, for one sample."""
    if not reference.strip():
        raise ValueError("empty reference explanation")
    return client.ask(reasoning_prompt(reference, prediction), parse_scores_answer, SCORES_FORMAT)
