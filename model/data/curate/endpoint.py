"""The one way to call a model server: an OpenAI-compatible chat endpoint (vLLM, SGLang,
llama.cpp server, Ollama, OpenAI itself) through the ``openai`` client.

What every caller gets (curation stages and the evaluation judge alike):

- the client's own retries (connection errors, 408/409/429/5xx, exponential backoff,
  ``Retry-After`` honoured) and a per-request timeout;
- an answer cache on disk, addressed by content: sha256 of (model, messages, max_tokens)
  → one small JSON file; only answers that parsed are stored, so a rerun costs nothing
  and a bad answer is asked again next time;
- answers in the asked schema (`schema_format` as ``response_format``; a server that
  refuses the field is remembered and asked without it: docs/curation.md);
- JSON answers: ``ask_json`` parses with the caller's parser, asks once more quoting
  the parse error, then raises ``AnswerError``;
- an API key from an environment variable (none is needed for a local server);
- ``check()``: is the server there at all (one ``GET /v1/models``, no retries), for a
  one-line error before any work.

Thread-safe: one ``Endpoint`` is shared by all workers of a run (the ``openai`` client
pools its connections); bounded concurrency is the caller's thread pool.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from live.contract.files import write_whole

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 120.0  # s per request (a 72B VLM on many images is slow)
DEFAULT_RETRIES = 4  # the client's extra attempts after a failed request
CHECK_TIMEOUT_S = 5.0  # s for the endpoint-down check at start
DEFAULT_MAX_TOKENS = 512  # answer budget per call
API_KEY_ENV = "OPENAI_API_KEY"  # default variable holding the key
NO_KEY = "EMPTY"  # what local servers (vLLM's convention) accept when no key is set
JPEG_QUALITY = 90  # images are sent as JPEG data URLs


class EndpointError(RuntimeError):
    """The server could not be reached or kept failing (HTTP error, timeout)."""


class AnswerError(ValueError):
    """The server answered, but not in the asked format (after the retry). ``answer``
    holds the last raw text."""

    def __init__(self, message: str, answer: str, reason: str = ""):
        super().__init__(message)
        self.answer = answer
        self.reason = reason or message


def base_url(url: str) -> str:
    """``http://host:port``, ``.../v1`` or the full ``.../v1/chat/completions`` → the
    ``.../v1`` base the ``openai`` client wants. Raises ValueError for a non-HTTP URL."""
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://[^/]", url):
        raise ValueError(f"endpoint URL must start with http:// or https://, got {url!r}")
    if url.endswith("/chat/completions"):
        url = url[: -len("/chat/completions")]
    return url if url.endswith("/v1") else url + "/v1"


# ----------------------------------------------------------------- message content
def image_part(rgb: np.ndarray, quality: int = JPEG_QUALITY) -> dict:
    """(H, W, 3) uint8 RGB → an ``image_url`` content part (JPEG data URL)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=quality)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}"}}


def audio_part(samples: np.ndarray, rate: int) -> dict:
    """(n,) float32 mono → an ``input_audio`` content part (16-bit PCM wav, base64)."""
    import wave

    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(pcm)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


# ------------------------------------------------------------------------ answers
def strip_wrapping(answer: str) -> str:
    """Remove a Markdown code fence and an ``Output:`` / ``Answer:`` prefix."""
    s = answer.strip()
    fence = re.match(r"^```[a-zA-Z]*\s*(.*?)\s*```$", s, re.S)
    if fence:
        s = fence.group(1).strip()
    return re.sub(r"^(?:output|answer)\s*[:：]\s*", "", s, flags=re.I)


def answer_int(obj: dict, key: str, lo: int, hi: int, name: str | None = None) -> int:
    """``obj[key]`` as an integer in lo..hi (7.0 counts as 7; a bool does not). Raises
    ValueError naming it (``name``, default the key) and the value."""
    v = obj.get(key)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{name or key} must be an integer {lo}..{hi}, got {v!r}")
    return v


def json_object(answer: str) -> dict[str, Any]:
    """THE JSON-answer rule: the one JSON object in a model's answer (code fences and
    text around it tolerated). Raises ValueError: none, several, or invalid JSON."""
    s = strip_wrapping(answer)
    dec = json.JSONDecoder()
    found: list[dict] = []
    i, err = s.find("{"), None
    while i != -1:
        try:
            obj, end = dec.raw_decode(s, i)
        except json.JSONDecodeError as e:
            err = err or e
            i = s.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            found.append(obj)
        i = s.find("{", end)
    if len(found) == 1:
        return found[0]
    if not found and err is not None:
        raise ValueError(f"invalid JSON ({err.msg})")
    raise ValueError(f"expected one JSON object, found {len(found)}")


def schema_format(name: str, schema: dict) -> dict:
    """The ``response_format`` asking for a JSON answer following ``schema`` (OpenAI's
    structured-output form, which vLLM, SGLang, Ollama and llama.cpp also read).
    ``schema`` is written strict-compatible (every property required, no others)."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def _refuses_format(e: BaseException) -> bool:
    """An HTTP 400 that names the response format: the server does not take it."""
    text = str(getattr(e, "message", "") or e) + json.dumps(getattr(e, "body", None), default=str)
    return getattr(e, "status_code", None) == 400 and any(
        w in text.lower() for w in ("response_format", "json_schema", "response format"))


# ------------------------------------------------------------------------ endpoint
class Endpoint:
    """A cached, retrying chat-completions client for one (server, model).

    Args:
        url: server URL (see ``base_url``).
        model: model name sent with each request.
        cache_dir: answer cache folder (None: no cache).
        retries: the ``openai`` client's extra attempts after a failed request.
        timeout_s: per-request timeout.
        api_key_env: environment variable holding the API key (unset: no key).
        max_tokens: default answer budget.
    """

    def __init__(self, url: str, model: str, cache_dir: str | Path | None = None,
                 retries: int = DEFAULT_RETRIES, timeout_s: float = DEFAULT_TIMEOUT_S,
                 api_key_env: str = API_KEY_ENV, max_tokens: int = DEFAULT_MAX_TOKENS):
        import openai

        if retries < 0 or timeout_s <= 0 or max_tokens < 1:
            raise ValueError(f"bad endpoint settings: retries={retries}, timeout_s={timeout_s}, "
                             f"max_tokens={max_tokens}")
        if not model:
            raise ValueError("endpoint model name is empty")
        self.url = base_url(url)
        self.model = model
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.retries, self.timeout_s, self.max_tokens = retries, timeout_s, max_tokens
        self.api_key_env = api_key_env
        self.client = openai.OpenAI(base_url=self.url, api_key=os.environ.get(api_key_env) or NO_KEY,
                                    max_retries=retries, timeout=timeout_s)
        self._lock = threading.Lock()
        self.requests = 0  # chat requests answered by the server (the client's retries not counted)
        self.cache_hits = 0
        self.takes_format = True  # False once the server refused a response_format (HTTP 400)

    # -- cache
    def cache_key(self, messages: Sequence[dict], max_tokens: int) -> str:
        blob = json.dumps([self.model, list(messages), max_tokens], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _cache_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / key[:2] / f"{key}.json"

    def _cached(self, key: str) -> str | None:
        path = self._cache_path(key)
        if path is None or not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # a torn file is a miss; it is rewritten after the next answer
        answer = entry.get("answer") if entry.get("key") == key else None
        return answer if isinstance(answer, str) else None

    def _store(self, key: str, answer: str) -> None:
        path = self._cache_path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with write_whole(path, "w", encoding="utf-8") as f:
            f.write(json.dumps({"key": key, "model": self.model, "answer": answer}))

    # -- calls
    def check(self) -> None:
        """Raise EndpointError when nothing answers at the URL (connection refused,
        timeout) or the server refuses the key (401/403). Any other HTTP answer counts
        as up: some servers do not list models."""
        import openai

        try:
            self.client.with_options(max_retries=0, timeout=CHECK_TIMEOUT_S).models.list()
        except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
            raise EndpointError(f"{self.url}: the server refused the API key (HTTP {e.status_code}); "
                                f"set ${self.api_key_env}") from None
        except openai.APIStatusError:
            return
        except (openai.APIConnectionError, openai.APITimeoutError) as e:
            raise EndpointError(f"{self.url}: not reachable ({_why(e)})") from None

    def complete(self, messages: Sequence[dict], max_tokens: int | None = None,
                 response_format: dict | None = None) -> str:
        """The server's raw answer to ``messages`` (no cache), constrained by
        ``response_format`` (`schema_format`) unless this server refused one: then it is
        left out, now (the request is sent again without it) and from then on.
        Raises EndpointError."""
        import openai

        extra = {"response_format": response_format} if response_format and self.takes_format else {}
        try:
            resp = self.client.chat.completions.create(
                model=self.model, messages=list(messages), temperature=0,
                max_tokens=max_tokens or self.max_tokens, **extra)
        except openai.BadRequestError as e:
            if extra and _refuses_format(e):
                self.takes_format = False  # remembered for this endpoint
                return self.complete(messages, max_tokens)
            raise EndpointError(f"{self.url}: HTTP {e.status_code} ({_why(e)})") from None
        except openai.APIStatusError as e:
            raise EndpointError(f"{self.url}: HTTP {e.status_code} ({_why(e)})") from None
        except openai.APITimeoutError:
            raise EndpointError(f"{self.url}: timed out after {self.retries + 1} attempts "
                                f"({self.timeout_s:g} s each)") from None
        except openai.APIConnectionError as e:
            raise EndpointError(f"{self.url}: failed after {self.retries + 1} attempts ({_why(e)})") from None
        except (openai.OpenAIError, ValueError) as e:  # a 200 that is not a chat completion
            raise EndpointError(f"{self.url}: bad response ({_why(e)})") from None
        with self._lock:
            self.requests += 1
        try:
            content = resp.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            raise EndpointError(f"{self.url}: response has no choices[0].message.content text")
        return content

    def ask(self, messages: Sequence[dict], parse: Callable[[str], T],
            max_tokens: int | None = None, response_format: dict | None = None) -> T:
        """Cached answer to ``messages``, parsed. An answer ``parse`` rejects (ValueError)
        is raised as AnswerError and not cached. Raises EndpointError too.
        ``response_format``: see `complete` (not part of the cache key: a call site
        always sends the same format with the same messages)."""
        budget = max_tokens or self.max_tokens
        key = self.cache_key(messages, budget)
        cached = self._cached(key)
        if cached is not None:
            try:
                value = parse(cached)
            except ValueError:
                pass  # the parser changed since; ask again
            else:
                with self._lock:
                    self.cache_hits += 1
                return value
        answer = self.complete(messages, budget, response_format)
        try:
            value = parse(answer)
        except ValueError as e:
            raise AnswerError(f"malformed answer ({e}): {answer[:200]!r}", answer, str(e)) from None
        self._store(key, answer)
        return value

    def ask_json(self, messages: Sequence[dict], parse: Callable[[dict], T],
                 max_tokens: int | None = None, response_format: dict | None = None) -> T:
        """Ask for a JSON object; ``parse(obj)`` checks its schema (ValueError when wrong).
        ``response_format`` (`schema_format`) asks the server to keep to that schema.
        A bad answer gets one retry that quotes the error; then AnswerError."""
        def full(answer: str) -> T:
            return parse(json_object(answer))

        try:
            return self.ask(messages, full, max_tokens, response_format)
        except AnswerError as e:
            retry = [*messages, {"role": "assistant", "content": e.answer},
                     {"role": "user", "content": (
                         f"Your answer could not be used: {e.reason}. "
                         "Answer again with only the JSON object, exactly in the asked form.")}]
            try:
                return self.ask(retry, full, max_tokens, response_format)
            except AnswerError as e2:
                raise AnswerError(f"{e2} (after one retry)", e2.answer, e2.reason) from None


def _why(e: BaseException) -> str:
    """A short reason from an ``openai`` error (its message, or the cause's)."""
    cause = e.__cause__ or e.__context__
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if cause is not None and str(cause).strip() and text in ("Connection error.", "Request timed out."):
        text = str(cause).strip().splitlines()[0]
    return text[:200]
