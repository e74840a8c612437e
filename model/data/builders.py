"""Public label files → manifests, with the paper's instruction templates.

    phase 1  commonvoice (TSV), wavcaps (JSON), vggsound (CSV)   → asr / audio_caption
    phase 2  csv (video,label), dfew (CSV), mafw (txt/CSV)      → emotion_cls
    phase 3  reasoning (SRE/HRE-style JSON/JSONL)               → emotion_reason

Accepted layouts, the failure rules (a malformed row raises ``ValueError`` naming file
and row: training on a silently shortened label file would be worse; a sample whose
media is missing or does not decode is skipped and reported in ``BuildResult.skipped``)
and the seeded templates: docs/data.md.

Command line::

    python -m model.data.builders dfew LABELS.csv VIDEO_DIR --out train.jsonl \\
        [--seed 0] [--cache CACHE_DIR] [--no-check-files] [--overwrite]

Errors: the `live.contract.cli` convention.
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from live.contract.cli import CliError, check_out, run_main
from model.net import templates as T
from model.net.answers import parse_label_list
from model.data.manifest import (
    TASK_ASR, TASK_AUDIO_CAPTION, TASK_EMOTION_CLS, TASK_EMOTION_REASON, make_sample,
    write_manifest,
)

VIDEO_EXT = ".mp4"  # appended to clip names given without an extension
AUDIO_EXTS = (".wav", ".flac", ".mp3", ".ogg", ".m4a")
VGGSOUND_NAME = "{ytid}_{start:06d}.mp4"  # the common name of a downloaded VGGSound clip
DFEW_ZFILL = 5  # DFEW clips are 00001.mp4 ... 16372.mp4


@dataclass
class Skip:
    """A sample left out, and why."""

    id: str
    reason: str


@dataclass
class BuildResult:
    samples: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)


class _Collector:
    """Shared per-builder state: rng, file checks, results."""

    def __init__(self, seed: int, check_files: bool):
        self.rng = random.Random(seed)
        self.check_files = check_files
        self.result = BuildResult()
        self._ids: dict[str, str] = {}

    def add(self, where: str, sample_id: str, media: Sequence[Path | None],
            build: Callable[[], dict[str, Any]]) -> None:
        if sample_id in self._ids:
            raise ValueError(f"{where}: duplicate sample id {sample_id!r} (first at {self._ids[sample_id]})")
        self._ids[sample_id] = where
        sample = build()  # always draw from rng, so skips do not shift later samples
        for path in media:
            if self.check_files and path is not None and not path.is_file():
                self.result.skipped.append(Skip(sample_id, f"missing file {path}"))
                return
        self.result.samples.append(sample)


def _need(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{where}: {msg}")


def _open_rows(path: Path, delimiter: str, quoting: int = csv.QUOTE_MINIMAL,
               columns: Sequence[str] | None = None) -> Iterator[tuple[int, Any]]:
    """(line number, row) pairs: dicts when ``columns`` (required header names) are
    given, else plain lists of fields."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, encoding="utf-8", newline="") as f:
        if columns is not None:
            reader = csv.DictReader(f, delimiter=delimiter, quoting=quoting)
            have = [h.strip() for h in reader.fieldnames or []]
            missing = [col for col in columns if col not in have]
            if missing:
                raise ValueError(f"{path}:1: missing columns {missing}; header is {have}")
            reader.fieldnames = have
            for row in reader:
                yield reader.line_num, row
        else:
            plain = csv.reader(f, delimiter=delimiter, quoting=quoting)
            for row in plain:
                yield plain.line_num, row


def _media(root: Path, name: str, default_ext: str) -> Path:
    p = Path(name)
    if not p.suffix:
        p = p.with_name(p.name + default_ext)
    return (root / p).resolve()


def _cls_sample(c: _Collector, where: str, sid: str, video: Path, label: str,
                options: Sequence[str]) -> None:
    def build() -> dict[str, Any]:
        prompt, shown = T.classification_prompt(options, c.rng)
        return make_sample(sid, TASK_EMOTION_CLS, prompt, T.classification_answer(label),
                           video=str(video), label=label, options=shown)

    c.add(where, sid, [video], build)


# ------------------------------------------------------------------------- phase 1
def build_commonvoice(tsv: str | Path, clips_dir: str | Path, seed: int = 0,
                      check_files: bool = True) -> BuildResult:
    """CommonVoice ``train.tsv`` (tab separated, header with at least ``path`` and
    ``sentence``; clips in ``clips_dir``) → ASR samples, id ``commonvoice/<clip stem>``."""
    tsv, root = Path(tsv), Path(clips_dir)
    c = _Collector(seed, check_files)
    # QUOTE_NONE: CommonVoice sentences contain quote characters that are not CSV quoting
    for lineno, row in _open_rows(tsv, "\t", csv.QUOTE_NONE, ("path", "sentence")):
        where = f"{tsv}:{lineno}"
        clip, sentence = (row.get("path") or "").strip(), (row.get("sentence") or "").strip()
        _need(bool(clip), where, "empty 'path'")
        _need(bool(sentence), where, f"empty 'sentence' for {clip}")
        audio = _media(root, clip, ".mp3")
        sid = f"commonvoice/{Path(clip).stem}"
        c.add(where, sid, [audio], lambda: make_sample(
            sid, TASK_ASR, T.audio_instruction(TASK_ASR, c.rng), T.caption_answer(sentence),
            video=None, audio=str(audio)))
    return c.result


def build_wavcaps(json_path: str | Path, audio_dir: str | Path, seed: int = 0,
                  audio_ext: str = ".flac", check_files: bool = True) -> BuildResult:
    """WavCaps JSON (``{"data": [{"id", "caption", ...}, ...]}`` or a bare list) →
    captioning samples. The audio file is ``audio_dir/<id without audio suffix><audio_ext>``
    (WavCaps ids like ``Yb0RFKhbpFJA.wav`` ship as ``Yb0RFKhbpFJA.flac``)."""
    json_path, root = Path(json_path), Path(audio_dir)
    items = _load_json_items(json_path, "data")
    c = _Collector(seed, check_files)
    for i, item in enumerate(items):
        where = f"{json_path}: item {i}"
        _need(isinstance(item, dict), where, f"expected an object, got {type(item).__name__}")
        wid, caption = item.get("id"), item.get("caption")
        _need(isinstance(wid, (str, int)) and str(wid).strip() != "", where, f"bad 'id' {wid!r}")
        _need(isinstance(caption, str) and caption.strip() != "", where, f"bad 'caption' {caption!r}")
        stem = str(wid).strip()
        if Path(stem).suffix.lower() in AUDIO_EXTS:
            stem = Path(stem).stem
        audio = (root / (stem + audio_ext)).resolve()
        sid = f"wavcaps/{stem}"
        c.add(where, sid, [audio], lambda: make_sample(
            sid, TASK_AUDIO_CAPTION, T.audio_instruction(TASK_AUDIO_CAPTION, c.rng),
            T.caption_answer(caption), video=None, audio=str(audio)))
    return c.result


def build_vggsound(csv_path: str | Path, video_dir: str | Path, seed: int = 0,
                   split: str | None = "train", name_format: str = VGGSOUND_NAME,
                   check_files: bool = True) -> BuildResult:
    """VGGSound ``vggsound.csv`` (no header; ``youtube_id,start_seconds,label,split``;
    lines starting with ``#`` ignored) → captioning samples from the clips' audio
    track (``video`` null: phase 1 trains audio only). ``split=None`` keeps all rows."""
    csv_path, root = Path(csv_path), Path(video_dir)
    c = _Collector(seed, check_files)
    for lineno, row in _open_rows(csv_path, ","):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        where = f"{csv_path}:{lineno}"
        _need(len(row) == 4, where, f"expected 4 fields (youtube_id,start_seconds,label,split), got {row}")
        ytid, start_s, label, row_split = (x.strip() for x in row)
        try:
            start = int(float(start_s))
        except ValueError:
            raise ValueError(f"{where}: start_seconds {start_s!r} is not a number") from None
        _need(bool(ytid) and bool(label), where, "empty youtube_id or label")
        _need(row_split in ("train", "test"), where, f"split must be train/test, got {row_split!r}")
        if split is not None and row_split != split:
            continue
        clip = (root / name_format.format(ytid=ytid, start=start)).resolve()
        sid = f"vggsound/{ytid}_{start}"
        c.add(where, sid, [clip], lambda: make_sample(
            sid, TASK_AUDIO_CAPTION, T.audio_instruction(TASK_AUDIO_CAPTION, c.rng),
            T.caption_answer(label), video=None, audio=str(clip)))
    return c.result


# ------------------------------------------------------------------------- phase 2
def build_label_csv(csv_path: str | Path, video_dir: str | Path, seed: int = 0,
                    options: Sequence[str] | None = None, dataset: str = "csv",
                    check_files: bool = True) -> BuildResult:
    """Generic ``video,label`` CSV (header required; label names as text) →
    classification QA. Options: ``options`` or else the sorted labels of the file."""
    csv_path, root = Path(csv_path), Path(video_dir)
    rows: list[tuple[str, str, str]] = []
    for lineno, row in _open_rows(csv_path, ",", columns=("video", "label")):
        where = f"{csv_path}:{lineno}"
        video, label = (row.get("video") or "").strip(), (row.get("label") or "").strip().lower()
        _need(bool(video) and bool(label), where, f"empty video or label in {dict(row)}")
        rows.append((where, video, label))
    opts = [o.strip().lower() for o in options] if options is not None else sorted({r[2] for r in rows})
    for where, _, label in rows:
        _need(label in opts, where, f"label {label!r} is not one of {opts}")
    c = _Collector(seed, check_files)
    for where, video, label in rows:
        path = _media(root, video, VIDEO_EXT)
        sid = f"{dataset}/{Path(video).with_suffix('').as_posix()}"
        _cls_sample(c, where, sid, path, label, opts)
    return c.result


def build_dfew(csv_path: str | Path, video_dir: str | Path, seed: int = 0,
               check_files: bool = True) -> BuildResult:
    """DFEW set file (CSV with header ``video_name,label``; label 1..7 = happy, sad,
    neutral, angry, surprise, disgust, fear; clip ``<video_name zero-padded to 5>.mp4``)."""
    csv_path, root = Path(csv_path), Path(video_dir)
    c = _Collector(seed, check_files)
    for lineno, row in _open_rows(csv_path, ",", columns=("video_name", "label")):
        where = f"{csv_path}:{lineno}"
        name, lab = (row.get("video_name") or "").strip(), (row.get("label") or "").strip()
        _need(name != "", where, "empty video_name")
        label = _indexed_label(lab, T.DFEW_CLASSES, where, names_ok=False)
        stem = Path(name).stem.zfill(DFEW_ZFILL) if Path(name).stem.isdigit() else Path(name).stem
        path = _media(root, stem + (Path(name).suffix or VIDEO_EXT), VIDEO_EXT)
        _cls_sample(c, where, f"dfew/{stem}", path, label, T.DFEW_CLASSES)
    return c.result


def build_mafw(label_path: str | Path, video_dir: str | Path, seed: int = 0,
               check_files: bool = True) -> BuildResult:
    """MAFW single-label file: one ``clip label`` per line, separated by whitespace or a
    comma; label = an MAFW class name (anger, disgust, fear, happiness, neutral,
    sadness, surprise, contempt, anxiety, helplessness, disappointment) or its index
    1..11 in that order. A first line ``clip,label`` / ``video label`` is a header."""
    label_path, root = Path(label_path), Path(video_dir)
    if not label_path.is_file():
        raise FileNotFoundError(f"{label_path}: no such file")
    c = _Collector(seed, check_files)
    with open(label_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{label_path}:{lineno}"
            parts = line.replace(",", " ").split()
            _need(len(parts) == 2, where, f"expected 'clip label', got {line.strip()!r}")
            clip, lab = parts
            if lineno == 1 and lab.lower() in ("label", "emotion"):
                continue
            label = _indexed_label(lab, T.MAFW_CLASSES, where, names_ok=True)
            path = _media(root, clip, VIDEO_EXT)
            _cls_sample(c, where, f"mafw/{Path(clip).stem}", path, label, T.MAFW_CLASSES)
    return c.result


def _indexed_label(value: str, classes: Sequence[str], where: str, names_ok: bool) -> str:
    if value.isdigit() and 1 <= int(value) <= len(classes):
        return classes[int(value) - 1]
    if names_ok and value.lower() in classes:
        return value.lower()
    allowed = f"1..{len(classes)}" + (f" or one of {list(classes)}" if names_ok else "")
    raise ValueError(f"{where}: label {value!r} is not {allowed}")


# ------------------------------------------------------------------------- phase 3
def build_reasoning(path: str | Path, video_dir: str | Path, seed: int = 0,
                    check_files: bool = True, dataset: str = "reason",
                    answer_format: str = T.DEFAULT_ANSWER_FORMAT) -> BuildResult:
    """SRE/HRE-style annotations → detailed-analysis instructions.

    ``path``: a JSON array (or ``{"data": [...]}``) or JSONL of objects with
    ``id`` (or ``name``), optional ``video`` (default ``<id>.mp4``), ``explanation``
    (or ``description``/``reason``) and ``labels`` (or ``openset``: a list or a
    list-like string). The answer is the explanation followed by
    ``Open-vocabulary labels: a, b, c.`` (``answer_format="labels_first"``: the label
    sentence first). The trainer renders answers in its model's ``answer_format``
    whatever the manifest holds, so either order trains either model.
    """
    path, root = Path(path), Path(video_dir)
    items = _load_json_items(path, "data")
    c = _Collector(seed, check_files)
    for i, item in enumerate(items):
        where = f"{path}: item {i}"
        _need(isinstance(item, dict), where, f"expected an object, got {type(item).__name__}")
        rid = item.get("id", item.get("name"))
        _need(isinstance(rid, (str, int)) and str(rid).strip() != "", where, f"bad id {rid!r}")
        rid = str(rid).strip()
        expl = next((item[k] for k in ("explanation", "description", "reason") if k in item), None)
        _need(isinstance(expl, str) and expl.strip() != "", where, f"{rid}: empty explanation")
        raw = item.get("labels", item.get("openset"))
        try:
            labels = parse_label_list(raw)
        except ValueError as e:
            raise ValueError(f"{where}: {rid}: {e}") from None
        _need(bool(labels), where, f"{rid}: no open-vocabulary labels")
        video = item.get("video") or f"{rid}{VIDEO_EXT}"
        _need(isinstance(video, str), where, f"{rid}: bad video {video!r}")
        vpath = _media(root, video, VIDEO_EXT)
        sid = f"{dataset}/{rid}"
        try:
            answer = T.reasoning_answer(expl, labels, answer_format)
        except ValueError as e:
            raise ValueError(f"{where}: {rid}: {e}") from None
        c.add(where, sid, [vpath], lambda: make_sample(
            sid, TASK_EMOTION_REASON, T.reasoning_instruction(c.rng), answer,
            video=str(vpath), labels=[x.lower() for x in labels]))
    return c.result


def _load_json_items(path: Path, key: str) -> list:
    """A JSON array, an object holding the array under ``key``, or JSONL."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        if text.lstrip().startswith("{") and e.msg == "Extra data":  # JSONL
            from model.data.manifest import read_jsonl

            return read_jsonl(path)
        raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    if isinstance(obj, dict) and isinstance(obj.get(key), list):
        return obj[key]
    if isinstance(obj, list):
        return obj
    if isinstance(obj, dict):  # a single-line JSONL file
        return [obj]
    raise ValueError(f"{path}: expected a list or an object with a {key!r} list")


# ------------------------------------------------------------------ cache + output
def drop_undecodable(result: BuildResult, cache_dir: str | Path,
                     face_tracker=None, progress: bool = True):
    """Decode every sample into ``cache_dir`` (see ``preprocess``) and move samples
    that fail to decode from ``result.samples`` to ``result.skipped``. Returns the
    ``PreprocessSummary``."""
    from model.data.preprocess import preprocess_manifest

    summary = preprocess_manifest(result.samples, cache_dir, base_dir="/",
                                  progress=progress,
                                  **({} if face_tracker is None else {"face_tracker": face_tracker}))
    if summary.failed:
        result.skipped += [Skip(sid, why) for sid, why in summary.failed.items()]
        result.samples = [s for s in result.samples if s["id"] not in summary.failed]
    return summary


BUILDERS: dict[str, Callable[..., BuildResult]] = {
    "commonvoice": build_commonvoice,
    "wavcaps": build_wavcaps,
    "vggsound": build_vggsound,
    "csv": build_label_csv,
    "dfew": build_dfew,
    "mafw": build_mafw,
    "reasoning": build_reasoning,
}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.data.builders",
                                description="Build a training manifest from a public label file.")
    p.add_argument("format", choices=sorted(BUILDERS))
    p.add_argument("labels", help="the dataset's label file")
    p.add_argument("media_dir", help="folder holding the clips / audio files")
    p.add_argument("--out", required=True, help="manifest JSONL to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", help="decode into this cache and drop undecodable samples")
    p.add_argument("--no-check-files", action="store_true", help="do not skip missing media")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out manifest")
    p.add_argument("--answer-format", choices=T.ANSWER_FORMATS, default=T.DEFAULT_ANSWER_FORMAT,
                   help="reasoning: label sentence after (paper) or before the explanation")
    args = p.parse_args(argv)

    def work() -> int:
        check_out(args.out, args.overwrite, folder=False)
        if args.cache:
            check_out(args.cache, True, option="--cache")  # a cache is added to, never replaced
        try:  # the label file is the input: a bad one is a usage error
            extra = {"answer_format": args.answer_format} if args.format == "reasoning" else {}
            result = BUILDERS[args.format](args.labels, args.media_dir, seed=args.seed,
                                           check_files=not args.no_check_files, **extra)
        except (ValueError, OSError) as e:
            raise CliError(e) from None
        if args.cache:
            drop_undecodable(result, args.cache)
        n = write_manifest(result.samples, args.out)
        for skip in result.skipped:
            print(f"skipped {skip.id}: {skip.reason}", file=sys.stderr)
        print(f"wrote {n} samples to {args.out}; skipped {result.n_skipped}", file=sys.stderr)
        return 0

    return run_main(work)


if __name__ == "__main__":
    sys.exit(main())
