"""Evaluation command line (paper §5).

    python -m model.evaluate predict     --model DIR --data MANIFEST --out PRED.jsonl
    python -m model.evaluate classify    --pred P --gold G [--classes dfew|mafw|a,b,c] --json
    python -m model.evaluate emer-ov     --pred P --gold G (--synonyms S | --judge URL) --json
    python -m model.evaluate emer-reason --pred P --gold G --judge URL --json

Scores print in percent; reports go to stderr, so ``--json`` stdout stays one
parseable object; errors follow `live.contract.cli` (input errors exit 2, failures
while working 1). See docs/evaluation.md.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from live.contract.cli import DEVICE_DEFAULT, DEVICE_HELP, CliError, check_out, resolve_device, run_main
from model.data.manifest import ManifestError, iter_jsonl, read_manifest, write_jsonl
from model.serve.generate import EVAL_MAX_NEW_TOKENS

DEFAULT_JUDGE_CACHE = Path(".cache") / "judge"  # relative to the working directory
DEFAULT_WORKERS = 4  # concurrent judge requests
MAX_LISTED_IDS = 10  # ids quoted in a stderr report before "... and N more"
CLASS_SETS = {"dfew": "DFEW_CLASSES", "mafw": "MAFW_CLASSES"}  # names in templates


def _report(msg: str) -> None:
    print(msg, file=sys.stderr)


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:MAX_LISTED_IDS])
    more = len(ids) - MAX_LISTED_IDS
    return shown + (f", ... and {more} more" if more > 0 else "")


def _pct(x: float) -> float:
    return 100.0 * x


# ------------------------------------------------------------------------- readers
def iter_id_rows(path: Path):
    """JSONL lines → (line number, id, object); CliError naming file:line for a
    missing, ill-typed or repeated id."""
    seen: set[str] = set()
    for lineno, obj in iter_jsonl(path):
        sid = obj.get("id")
        if not isinstance(sid, str) or not sid:
            raise CliError(f"{path}:{lineno}: 'id' must be a non-empty string, got {sid!r}")
        if sid in seen:
            raise CliError(f"{path}:{lineno}: duplicate id {sid!r}")
        seen.add(sid)
        yield lineno, sid, obj


def read_id_rows(path: Path, key: str, check: Callable[[Any], bool], what: str,
                 required: bool = True) -> dict[str, Any]:
    """JSONL ``{"id", key}`` lines → {id: value}.

    Raises CliError naming file:line for a missing/ill-typed id or value or a
    duplicate id. With ``required=False`` a missing key reads as None.
    """
    out: dict[str, Any] = {}
    for lineno, sid, obj in iter_id_rows(path):
        if key not in obj and required:
            raise CliError(f"{path}:{lineno}: missing {key!r}")
        val = obj.get(key)
        if not check(val):
            raise CliError(f"{path}:{lineno}: {key!r} must be {what}, got {val!r}")
        out[sid] = val
    return out


def _first_char(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                return line.strip()[0]
    return ""


def read_label_sets(path: Path) -> dict[str, list[str]]:
    """Open-vocab labels per id from JSONL (``{"id", "labels": [...]}``) or from the
    MERTools CSV layout (``name,openset`` with list-like strings)."""
    from model.net.answers import parse_label_list

    if _first_char(path) == "{":
        rows = read_id_rows(
            path, "labels",
            lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
            "a list of strings",
        )
        return {sid: parse_label_list(v) for sid, v in rows.items()}
    out: dict[str, list[str]] = {}
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"name", "openset"} <= set(reader.fieldnames):
            raise CliError(f"{path}: expected JSONL lines or a CSV with columns name,openset; "
                           f"got header {reader.fieldnames}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            name = (row.get("name") or "").strip()
            if not name:
                raise CliError(f"{where}: empty name")
            if name in out:
                raise CliError(f"{where}: duplicate name {name!r}")
            try:
                out[name] = parse_label_list(row.get("openset") or "")
            except ValueError as e:
                raise CliError(f"{where}: {e}") from None
    return out


def read_synonyms(path: Path):
    """A synonyms JSON file → ``SynonymGroups`` (shapes: see SynonymGroups.from_obj)."""
    from model.evaluate.metrics import SynonymGroups

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CliError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    try:
        return SynonymGroups.from_obj(obj)
    except ValueError as e:
        raise CliError(f"{path}: {e}") from None


def _judge_client(args: argparse.Namespace):
    from model.evaluate.judge import JudgeClient

    return JudgeClient(args.judge, model=args.judge_model, cache_dir=args.judge_cache,
                       retries=args.judge_retries)


def _run_parallel(fn: Callable[[Any], Any], items: list, workers: int, desc: str) -> list:
    """fn over items on a thread pool with a progress bar; results in item order.
    Exceptions are returned in place of results (the caller sorts them out)."""
    from tqdm import tqdm

    def safe(item):
        try:
            return fn(item)
        except Exception as e:  # noqa: BLE001 - returned and classified by the caller
            return e

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(tqdm(pool.map(safe, items), total=len(items), desc=desc, file=sys.stderr))


def _good_answers(ids, answers, malformed: list[str]):
    """(id, answer) for the judge's usable answers; a malformed one is reported and
    its id added to ``malformed`` (never guessed); any other failure is raised."""
    from model.evaluate.judge import JudgeAnswerError

    for sid, ans in zip(ids, answers):
        if isinstance(ans, JudgeAnswerError):
            malformed.append(sid)
            _report(f"malformed judge answer for {sid}: {ans.answer[:200]!r}")
        elif isinstance(ans, Exception):
            raise ans
        else:
            yield sid, ans


# ------------------------------------------------------------------------ commands
def cmd_predict(args: argparse.Namespace) -> int:
    """Generate answers for a manifest, then parse labels from them."""
    from model.checkpoint.check import check_checkpoint

    manifest = Path(args.data)
    model_dir = check_checkpoint(args.model)  # missing or damaged: exit 2 before any work
    out = check_out(args.out, args.overwrite, folder=False)
    device = resolve_device(args.device)
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_new_tokens < 1:
        raise CliError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.cache is not None and not Path(args.cache).is_dir():
        raise CliError(f"{args.cache}: cache folder not found")
    samples = read_manifest(manifest)  # validate before loading a model
    if not samples:
        raise CliError(f"{manifest}: no samples")
    try:
        from model.evaluate.predict import predict_manifest
    except ImportError as e:
        raise CliError(f"model.evaluate.predict is not available ({e})") from None
    n = predict_manifest(model_dir, manifest, out, args.batch_size, device, cache_dir=args.cache,
                         max_new_tokens=args.max_new_tokens)
    rows = add_parsed_labels([obj for _, obj in iter_jsonl(out)], samples)
    write_jsonl(rows, out)
    _report(f"wrote {len(rows)} predictions to {out} (generated {n})")
    return 0


def add_parsed_labels(rows: list[dict], samples: list[dict]) -> list[dict]:
    """Fill ``label`` and ``labels`` of prediction rows from their ``text``.

    The option list of a sample comes from its manifest ``options`` or, failing that,
    from its phase-2 prompt; without either the answer is parsed as open vocabulary.
    Rows keep ``id`` and ``text`` and any other keys the generator wrote.
    """
    from model.net.answers import parse_answer
    from model.net.templates import options_from_prompt

    by_id = {s["id"]: s for s in samples}
    out = []
    for row in rows:
        sid, text = row.get("id"), row.get("text")
        if sid not in by_id:
            raise CliError(f"prediction for unknown id {sid!r}")
        if not isinstance(text, str):
            raise CliError(f"prediction {sid!r}: 'text' must be a string, got {text!r}")
        sample = by_id[sid]
        options = sample.get("options") or options_from_prompt(sample["conversations"][0]["content"])
        parsed = parse_answer(text, options)
        out.append({**row, "id": sid, "text": text, "label": parsed.label, "labels": parsed.labels})
    return out


def _class_list(spec: str | None) -> list[str] | None:
    if spec is None:
        return None
    from model.net import templates

    if spec.lower() in CLASS_SETS:
        return list(getattr(templates, CLASS_SETS[spec.lower()]))
    classes = [c.strip() for c in spec.split(",") if c.strip()]
    if len(classes) < 2:
        raise CliError(f"--classes needs 'dfew', 'mafw' or a comma list of 2+ names, got {spec!r}")
    return classes


def cmd_classify(args: argparse.Namespace) -> int:
    from model.evaluate.metrics import classification_metrics, save_confusion_png

    pred_path, gold_path = Path(args.pred), Path(args.gold)
    gold = read_id_rows(gold_path, "label", lambda v: isinstance(v, str) and v.strip() != "",
                        "a non-empty string")
    pred = read_id_rows(pred_path, "label", lambda v: v is None or isinstance(v, str),
                        "a string or null")
    if not gold:
        raise CliError(f"{gold_path}: no gold lines")
    try:
        res = classification_metrics(gold, pred, _class_list(args.classes))
    except ValueError as e:
        raise CliError(str(e)) from None
    if res.missing:
        _report(f"{len(res.missing)} gold ids have no prediction (counted wrong): {_ids(res.missing)}")
    if res.extra:
        _report(f"{len(res.extra)} predicted ids are not in gold (ignored): {_ids(res.extra)}")
    png = pred_path.with_name(pred_path.stem + ".confusion.png")
    save_confusion_png(res, png)
    _report(f"confusion matrix: {png}")
    scores = {"uar": _pct(res.uar), "war": _pct(res.war), "n": res.n}
    if args.json:
        print(json.dumps(scores))
    else:
        print(f"UAR {scores['uar']:.2f}%  WAR {scores['war']:.2f}%  n={res.n}")
        for c in res.classes:
            if c in res.recall:
                print(f"  {c:>16s}  recall {100 * res.recall[c]:6.2f}%")
    return 0


def cmd_emer_ov(args: argparse.Namespace) -> int:
    from model.evaluate.metrics import SynonymGroups, openset_metrics

    if (args.synonyms is None) == (args.judge is None):
        raise CliError("give exactly one of --synonyms S or --judge URL")
    gold = read_label_sets(Path(args.gold))
    pred = read_label_sets(Path(args.pred))
    if not gold:
        raise CliError(f"{args.gold}: no gold samples")
    empty = [sid for sid, labels in gold.items() if not labels]
    if empty:
        raise CliError(f"{args.gold}: gold samples with no labels: {_ids(empty)}")
    malformed: list[str] = []
    if args.synonyms is not None:
        groups = read_synonyms(Path(args.synonyms))
    else:
        from model.evaluate.judge import group_synonyms

        client = _judge_client(args)
        ids = [sid for sid in gold if pred.get(sid)]  # an empty prediction scores 0 anyway
        answers = _run_parallel(lambda sid: group_synonyms(client, gold[sid], pred[sid]),
                                ids, args.workers, "judge: synonyms")
        per: dict[str, dict[str, str]] = {sid: {} for sid in gold if not pred.get(sid)}
        from model.evaluate.metrics import groups_to_map

        for sid, ans in _good_answers(ids, answers, malformed):
            per[sid] = groups_to_map(ans)
        groups = SynonymGroups(per_sample=per)
    try:
        res = openset_metrics(gold, pred, groups)
    except ValueError as e:
        raise CliError(str(e)) from None
    if res.missing:
        _report(f"{len(res.missing)} gold ids have no prediction (scored 0): {_ids(res.missing)}")
    skipped = [s for s in res.no_groups if s not in malformed]
    if skipped:
        _report(f"{len(skipped)} gold ids have no synonym groups (not scored): {_ids(skipped)}")
    if malformed:
        _report(f"{len(malformed)} samples not scored: malformed judge answers")
    if res.extra:
        _report(f"{len(res.extra)} predicted ids are not in gold (ignored): {_ids(res.extra)}")
    scores = {"precision": _pct(res.precision), "recall": _pct(res.recall),
              "avg": _pct(res.avg), "n": res.n}
    if args.json:
        print(json.dumps(scores))
    else:
        print(f"precision {scores['precision']:.2f}%  recall {scores['recall']:.2f}%  "
              f"avg {scores['avg']:.2f}%  n={res.n}")
    return 0


def _text_of(obj: dict, keys: Sequence[str]) -> Any:
    for k in keys:
        if k in obj:
            return obj[k]
    return None


def _read_texts(path: Path, keys: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for lineno, sid, obj in iter_id_rows(path):
        text = _text_of(obj, keys)
        if not isinstance(text, str):
            raise CliError(f"{path}:{lineno}: needs a string in one of {list(keys)}")
        out[sid] = text
    return out


def cmd_emer_reason(args: argparse.Namespace) -> int:
    from model.evaluate.judge import score_reasoning

    gold = _read_texts(Path(args.gold), ("explanation", "reason", "text"))
    pred = _read_texts(Path(args.pred), ("text", "explanation"))
    if not gold:
        raise CliError(f"{args.gold}: no gold samples")
    empty = [sid for sid, t in gold.items() if not t.strip()]
    if empty:
        raise CliError(f"{args.gold}: empty reference explanations: {_ids(empty)}")
    missing = [sid for sid in gold if sid not in pred]
    ids = [sid for sid in gold if sid in pred]
    client = _judge_client(args)
    answers = _run_parallel(lambda sid: score_reasoning(client, gold[sid], pred[sid]),
                            ids, args.workers, "judge: reasoning")
    clue, label, malformed = [], [], []
    for _, ans in _good_answers(ids, answers, malformed):
        clue.append(ans[0])
        label.append(ans[1])
    if missing:
        _report(f"{len(missing)} gold ids have no prediction (not scored): {_ids(missing)}")
    if malformed:
        _report(f"{len(malformed)} samples not scored: malformed judge answers")
    if not clue:
        raise CliError("no sample could be scored")
    scores = {"clue_overlap": sum(clue) / len(clue), "label_overlap": sum(label) / len(label),
              "n": len(clue), "missing": len(missing), "malformed": len(malformed)}
    if args.json:
        print(json.dumps(scores))
    else:
        print(f"clue overlap {scores['clue_overlap']:.2f}  label overlap "
              f"{scores['label_overlap']:.2f}  n={len(clue)}")
    return 0


# ---------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model.evaluate", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("predict", help="generate answers for a manifest and parse labels")
    s.add_argument("--model", required=True, help="model folder")
    s.add_argument("--data", required=True, help="manifest JSONL")
    s.add_argument("--out", required=True, help="predictions JSONL to write")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--device", default=DEVICE_DEFAULT, help=DEVICE_HELP)
    s.add_argument("--cache", help="preprocessing cache to read media from (default: decode each file)")
    s.add_argument("--max-new-tokens", type=int, default=EVAL_MAX_NEW_TOKENS, help="generation budget per answer")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("classify", help="UAR/WAR of {id, label} predictions")
    s.add_argument("--pred", required=True)
    s.add_argument("--gold", required=True)
    s.add_argument("--classes", help="dfew, mafw, or a comma list (default: gold labels)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_classify)

    def judge_opts(s: argparse.ArgumentParser, required: bool) -> None:
        s.add_argument("--judge", required=required, help="OpenAI-compatible endpoint URL")
        s.add_argument("--judge-model", default="gpt-3.5-turbo")
        s.add_argument("--judge-cache", default=str(DEFAULT_JUDGE_CACHE), help="answer cache folder")
        s.add_argument("--judge-retries", type=int, default=4)
        s.add_argument("--workers", type=int, default=DEFAULT_WORKERS)

    s = sub.add_parser("emer-ov", help="EMER-OV open-vocabulary precision/recall")
    s.add_argument("--pred", required=True)
    s.add_argument("--gold", required=True)
    s.add_argument("--synonyms", help="synonym groups JSON")
    judge_opts(s, required=False)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_emer_ov)

    s = sub.add_parser("emer-reason", help="EMER reasoning scores from a judge LLM")
    s.add_argument("--pred", required=True)
    s.add_argument("--gold", required=True)
    judge_opts(s, required=True)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_emer_reason)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Input errors found before the work are usage errors (exit 2); the judge's and
    # others while working are runtime errors (exit 1).
    return run_main(lambda: args.func(args), usage=(ManifestError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
