"""A judge LLM behind an OpenAI-compatible chat endpoint (AffectGPT used GPT-3.5).

Two jobs: group open-vocabulary labels into synonym sets (EMER-OV with ``--judge``) and
score an explanation against the reference (EMER reasoning, clue and label overlap
1–10). Calls retry with exponential backoff on network errors, 429 and 5xx; answers
are cached on disk by (model, prompt) so a rerun costs nothing and gives the same
numbers. An answer that does not parse is raised as ``JudgeAnswerError`` carrying the
raw text — the caller reports it; nothing here guesses a value. Malformed answers are
not cached, so a later run asks again.

Plain ``urllib``: no client library, nothing to configure beyond the URL.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from model.evaluate.metrics import parse_group_lists

T = TypeVar("T")

DEFAULT_MODEL = "gpt-3.5-turbo"
DEFAULT_RETRIES = 4  # attempts after the first
DEFAULT_BACKOFF_S = 1.0  # first wait; doubles each retry (1, 2, 4, 8 s)
DEFAULT_TIMEOUT_S = 60.0  # per HTTP request
MAX_TOKENS = 1000  # MERTools' setting for the synonym call
SCORE_MIN, SCORE_MAX = 1, 10
API_KEY_ENV = "JUDGE_API_KEY"  # sent as a Bearer token when set (local servers need none)
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class JudgeError(RuntimeError):
    """The endpoint could not be reached / kept failing after all retries."""


class JudgeAnswerError(ValueError):
    """The judge answered, but not in the asked format. ``answer`` holds the raw text."""

    def __init__(self, message: str, answer: str):
        super().__init__(message)
        self.answer = answer


def chat_url(url: str) -> str:
    """Accept a base URL (``http://host:port`` or ``.../v1``) or the full
    ``.../chat/completions`` URL; return the full one."""
    url = url.rstrip("/")
    if not re.match(r"^https?://", url):
        raise ValueError(f"judge URL must start with http:// or https://, got {url!r}")
    if url.endswith("/chat/completions"):
        return url
    if not url.endswith("/v1"):
        url += "/v1"
    return url + "/chat/completions"


class JudgeClient:
    """Cached, retrying chat-completion client.

    Args:
        url: endpoint (see ``chat_url``).
        model: model name sent in the request.
        cache_dir: folder for cached answers (one JSON file per prompt); None = no cache.
        retries: extra attempts after a failed one.
        backoff_s: first wait between attempts, doubled each time.
        timeout_s: per-request timeout.
        sleep: injectable for tests.
    """

    def __init__(
        self,
        url: str,
        model: str = DEFAULT_MODEL,
        cache_dir: str | Path | None = None,
        retries: int = DEFAULT_RETRIES,
        backoff_s: float = DEFAULT_BACKOFF_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if retries < 0 or backoff_s < 0 or timeout_s <= 0:
            raise ValueError(
                f"bad retry settings: retries={retries}, backoff_s={backoff_s}, timeout_s={timeout_s}"
            )
        self.url = chat_url(url)
        self.model = model
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.retries, self.backoff_s, self.timeout_s = retries, backoff_s, timeout_s
        self._sleep = sleep
        self.requests = 0  # HTTP requests actually sent (tests and logs read it)

    # -- cache
    def _cache_path(self, prompt: str) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(json.dumps([self.model, prompt]).encode()).hexdigest()
        return self.cache_dir / f"{key}.json"

    def _cached(self, prompt: str) -> str | None:
        path = self._cache_path(prompt)
        if path is None or not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # a torn cache file is just a miss; it is rewritten below
        if entry.get("model") == self.model and entry.get("prompt") == prompt:
            return entry.get("answer")
        return None

    def _store(self, prompt: str, answer: str) -> None:
        path = self._cache_path(prompt)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"model": self.model, "prompt": prompt, "answer": answer}),
                       encoding="utf-8")
        tmp.replace(path)

    # -- HTTP
    def _post(self, prompt: str) -> str:
        body = json.dumps({
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            "max_tokens": MAX_TOKENS,
        }).encode()
        headers = {"Content-Type": "application/json"}
        if os.environ.get(API_KEY_ENV):
            headers["Authorization"] = f"Bearer {os.environ[API_KEY_ENV]}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        self.requests += 1
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            payload = json.loads(resp.read().decode("utf-8"))
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise JudgeError(f"{self.url}: response has no choices[0].message.content") from None
        if not isinstance(content, str):
            raise JudgeError(f"{self.url}: message content is not text")
        return content

    def complete(self, prompt: str) -> str:
        """The judge's answer to ``prompt`` (uncached raw text, retried on failure)."""
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                return self._post(prompt)
            except urllib.error.HTTPError as e:
                if e.code not in _RETRY_STATUS:
                    raise JudgeError(f"{self.url}: HTTP {e.code} {e.reason}") from None
                last = e
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError,
                    json.JSONDecodeError) as e:
                last = e
        raise JudgeError(f"{self.url}: failed after {self.retries + 1} attempts: {last}")

    def ask(self, prompt: str, parse: Callable[[str], T]) -> T:
        """Ask (or read the cache) and parse the answer.

        Raises:
            JudgeAnswerError: ``parse`` rejected the answer (not cached).
            JudgeError: the endpoint kept failing.
        """
        cached = self._cached(prompt)
        if cached is not None:
            try:
                return parse(cached)
            except ValueError:
                pass  # parser changed since; ask again
        answer = self.complete(prompt)
        try:
            value = parse(answer)
        except ValueError as e:
            raise JudgeAnswerError(f"malformed judge answer ({e}): {answer[:200]!r}", answer) from None
        self._store(prompt, answer)
        return value


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


def _strip_wrapping(answer: str) -> str:
    s = answer.strip()
    fence = re.match(r"^```[a-zA-Z]*\s*(.*?)\s*```$", s, re.S)
    if fence:
        s = fence.group(1).strip()
    s = re.sub(r"^(?:output|answer)\s*[:：]\s*", "", s, flags=re.I)
    return s


def parse_groups_answer(answer: str) -> list[list[str]]:
    """A grouping answer → list of lists of strings. Strict: the answer must be a
    bracketed list of lists (code fences and an "Output:" prefix are tolerated).

    Raises:
        ValueError: anything else.
    """
    s = _strip_wrapping(answer)
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
    return client.ask(synonym_prompt(labels), parse_groups_answer)


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
    s = _strip_wrapping(answer)
    objs = re.findall(r"\{[^{}]*\}", s)
    if len(objs) != 1:
        raise ValueError(f"expected one JSON object, found {len(objs)}")
    try:
        obj: Any = json.loads(objs[0])
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON ({e.msg})") from None
    out = []
    for key in ("clue_overlap", "label_overlap"):
        v = obj.get(key)
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or not SCORE_MIN <= v <= SCORE_MAX:
            raise ValueError(f"{key} must be an integer {SCORE_MIN}..{SCORE_MAX}, got {v!r}")
        out.append(v)
    return out[0], out[1]


def score_reasoning(client: JudgeClient, reference: str, prediction: str) -> tuple[int, int]:
    """(clue_overlap, label_overlap), each 1..10, for one sample."""
    if not reference.strip():
        raise ValueError("empty reference explanation")
    return client.ask(reasoning_prompt(reference, prediction), parse_scores_answer)
