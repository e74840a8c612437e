"""The one training/evaluation manifest format: JSONL, one sample a line.

A line's keys (``id``, ``video`` or null, optional ``audio``, ``task``,
``conversations``, and what builders keep for evaluation): docs/data.md "Manifest".
Relative media paths are kept as written; ``resolve_media`` resolves them against the
manifest's folder, so a manifest and its media can move together.

Every reader here fails loudly with ``file:line`` in the message: a malformed line is
a data bug that must be fixed at the source, never skipped quietly.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from live.contract.files import write_whole

# Tasks the builders emit (one per training phase, ASR and captioning both phase 1).
TASK_AUDIO_CAPTION = "audio_caption"
TASK_ASR = "asr"
TASK_EMOTION_CLS = "emotion_cls"
TASK_EMOTION_REASON = "emotion_reason"
TASKS = (TASK_AUDIO_CAPTION, TASK_ASR, TASK_EMOTION_CLS, TASK_EMOTION_REASON)

ROLES = ("user", "assistant")
_KEYS = {"id", "video", "audio", "task", "conversations"}
# Extra keys a builder may keep for evaluation (gold label, options, open-vocab labels).
_OPTIONAL_KEYS = {"label", "labels", "options"}
# Provenance the curation commands keep (model.data.curate: SRE score, HRE reviewer).
_OPTIONAL_KEYS |= {"score", "intensity", "source_label", "source", "reviewer"}


class ManifestError(ValueError):
    """A manifest/JSONL file is malformed; the message names file and line."""


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file of objects.

    Args:
        path: file to read; blank lines are allowed and skipped.

    Returns:
        One dict per non-blank line, in file order.

    Raises:
        FileNotFoundError: the file does not exist (message names it).
        ManifestError: a line is not valid JSON or not a JSON object ("file:line: why").
    """
    return [obj for _, obj in iter_jsonl(path)]


def iter_jsonl(path: str | Path, torn_ok: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Lazy version of :func:`read_jsonl` yielding ``(line_number, object)`` (same
    errors, raised when the line is reached). ``torn_ok``: a last line without its
    newline (a writer killed mid-write, or still writing) ends the file quietly."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:  # bytes: a torn last line may end inside a UTF-8 character
        for lineno, raw in enumerate(f, 1):
            if torn_ok and not raw.endswith(b"\n"):
                return
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ManifestError(f"{path}:{lineno}: not UTF-8 text ({e.reason})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ManifestError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise ManifestError(
                    f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}"
                )
            yield lineno, obj


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write dicts as JSONL (UTF-8, one compact object a line); returns the row count.

    Written to a temporary name and renamed, so a crash never leaves half a manifest.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with write_whole(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def validate_sample(obj: dict[str, Any], where: str = "sample") -> dict[str, Any]:
    """Check one manifest sample and return a clean copy (without bookkeeping keys).

    Args:
        obj: the parsed line.
        where: prefix for error messages, e.g. ``"train.jsonl:12"``.

    Raises:
        ManifestError: a key is missing/unknown or has the wrong type or value.
    """
    obj = dict(obj)
    unknown = set(obj) - _KEYS - _OPTIONAL_KEYS
    if unknown:
        raise ManifestError(f"{where}: unknown keys {sorted(unknown)}")
    sid = obj.get("id")
    if not isinstance(sid, str) or not sid:
        raise ManifestError(f"{where}: 'id' must be a non-empty string, got {sid!r}")
    video, audio = obj.get("video"), obj.get("audio")
    for key, val in (("video", video), ("audio", audio)):
        if val is not None and (not isinstance(val, str) or not val):
            raise ManifestError(f"{where} ({sid}): {key!r} must be a path string, got {val!r}")
    if video is None and audio is None:
        raise ManifestError(f"{where} ({sid}): needs a 'video' or an 'audio' path")
    if "video" not in obj:
        raise ManifestError(f"{where} ({sid}): 'video' key missing (use null for audio-only)")
    task = obj.get("task")
    if task not in TASKS:
        raise ManifestError(f"{where} ({sid}): 'task' must be one of {TASKS}, got {task!r}")
    conv = obj.get("conversations")
    if not isinstance(conv, list) or len(conv) < 2 or len(conv) % 2:
        raise ManifestError(
            f"{where} ({sid}): 'conversations' must be a list of user/assistant pairs"
        )
    for i, turn in enumerate(conv):
        want = ROLES[i % 2]
        if not isinstance(turn, dict) or turn.get("role") != want:
            raise ManifestError(f"{where} ({sid}): turn {i} must have role {want!r}")
        if not isinstance(turn.get("content"), str) or not turn["content"].strip():
            raise ManifestError(f"{where} ({sid}): turn {i} has empty 'content'")
    _check_extras(obj, f"{where} ({sid})")
    return obj


def _check_extras(obj: dict[str, Any], where: str) -> None:
    """The optional keys' types: 'label' one non-empty string (the gold class),
    'labels' and 'options' lists of non-empty strings."""
    if "label" in obj and (not isinstance(obj["label"], str) or not obj["label"].strip()):
        raise ManifestError(f"{where}: 'label' must be one non-empty string, got {obj['label']!r}"
                            + (" (several labels go in 'labels')" if isinstance(obj["label"], list) else ""))
    for key in ("labels", "options"):
        val = obj.get(key)
        if val is not None and (not isinstance(val, list)
                                or not all(isinstance(x, str) and x.strip() for x in val)):
            raise ManifestError(f"{where}: {key!r} must be a list of non-empty strings, got {val!r}")


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate a manifest; ids must be unique.

    Raises:
        FileNotFoundError, ManifestError (with ``file:line``).
    """
    path = Path(path)
    out: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        sample = validate_sample(obj, f"{path}:{lineno}")
        if sample["id"] in seen:
            raise ManifestError(
                f"{path}:{lineno}: duplicate id {sample['id']!r} (first on line {seen[sample['id']]})"
            )
        seen[sample["id"]] = lineno
        out.append(sample)
    return out


def write_manifest(samples: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Validate and write samples as a manifest; returns the count written.

    Raises:
        ManifestError: a sample is invalid or an id repeats (nothing is written then).
    """
    clean: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, s in enumerate(samples):
        s = validate_sample(s, f"sample #{i}")
        if s["id"] in seen:
            raise ManifestError(f"sample #{i}: duplicate id {s['id']!r}")
        seen.add(s["id"])
        clean.append(s)
    return write_jsonl(clean, path)


def resolve_media(sample: dict[str, Any], base: str | Path) -> tuple[Path | None, Path | None]:
    """(video, audio) of a sample as paths, relative ones resolved against ``base``
    (normally the manifest's folder). ``audio`` is None when the video's own track is
    meant."""
    base = Path(base)

    def _res(p: str | None) -> Path | None:
        if p is None:
            return None
        q = Path(p)
        return q if q.is_absolute() else base / q

    return _res(sample.get("video")), _res(sample.get("audio"))


def make_sample(
    sample_id: str,
    task: str,
    instruction: str,
    answer: str,
    video: str | None,
    audio: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build one validated single-turn sample (``extra``: label/labels/options)."""
    s: dict[str, Any] = {"id": sample_id, "video": video}
    if audio is not None:
        s["audio"] = audio
    s["task"] = task
    s["conversations"] = [
        {"role": "user", "content": instruction},
        {"role": "assistant", "content": answer},
    ]
    s.update(extra)
    return validate_sample(s, f"sample {sample_id!r}")
