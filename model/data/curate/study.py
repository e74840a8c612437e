"""Consented study recordings → a labelled manifest the curation run reads directly.

    python -m model.data.curate study SESSION_DIR --out study.jsonl
        [--label-field self_report] [--session ID ...] [--consented] [--seed 0] [--overwrite]

SESSION_DIR is a study log folder (``app.py --log-dir``): ``<session>.jsonl`` window
records (``live.study_log.StudyLog``) and, for sessions recorded with "also store raw
frames + audio", ``<session>_media/window_<run>_<index>.npz`` (``frames`` (T, H, W, 3)
uint8, ``audio`` (n,) float32, ``rate``). Each window with media becomes one mp4
(its T frames at T / window-length frames per second, libx264, and its audio as AAC
mono at the recorded rate) under ``<out stem>_media/<session>/`` and one manifest line::

    {"id": "study/<session>/<run>_<index>", "video": "<out stem>_media/<session>/<run>_<index>.mp4",
     "task": "emotion_cls", "conversations": [classification question, "<label>."],
     "label": <the participant's self-reported label>, "options": [...]}

so the id prefix (the source dataset) is "study" and ``curate sre`` and the trainer
read it like a public label set. Options: the distinct self-reported labels of the
output (with the DFEW classes added where fewer than two were reported).

Label: the record field ``--label-field`` (default ``self_report``). The engine's own
``label`` / ``labels`` fields are the model's predictions, never gold: refused. A
window without a self-reported label is skipped and counted (SRE stage 5 reviews an
explanation against the gold label, so an unlabelled clip cannot pass it).

Label as the app records it: the page's self-report (``self_report``, set while the
participant states an emotion; ``app.py``'s study mode), so no flag is needed.

Consent: the app writes ``consent`` (and ``consent_at``) on every line of a study log
(``live.study_log.StudyLog``). A session is used when its last line with a consent
field says ``true``; one whose last says ``false`` (never given, or withdrawn) is never
used, whatever the flags. Inside a used session, a window whose own line says ``false``
is skipped (recorded before consent was given). Only logs with no consent field at all
(written before the app recorded it) need ``--consented``: the user's explicit
statement that every participant in these sessions consented to training use.

The last line on stdout: ``{"sessions", "samples", "skipped": {...}}``.
"""
from __future__ import annotations

import argparse
import fractions
import json
import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from live.contract.cli import CliError, check_out, run_main
from live.contract.files import write_whole
from live.study_log import StudyLogError, check_id, read_jsonl, session_logs
from live.testclip import add_audio, add_video, mux_audio, mux_video  # the project's mp4 stream writers
from model.net.answers import normalize_label
from model.data.curate.selection import write_lines
from model.data.manifest import TASK_EMOTION_CLS, make_sample
from model.net.templates import DFEW_CLASSES, classification_answer, classification_prompt

LABEL_FIELD = "self_report"  # default record field holding the participant's own label
MODEL_FIELDS = ("label", "labels", "explanation")  # written by the model: never gold
SOURCE = "study"  # id prefix = source dataset


def write_window_mp4(path: str | Path, frames: np.ndarray, seconds: float,
                     audio: np.ndarray | None, rate: int) -> Path:
    """One window as an mp4, written whole (temp name, fsync, rename).

    Args:
        frames: (T, H, W, 3) uint8 RGB, T >= 1, shown at T / ``seconds`` frames per second
            (odd sizes lose their last row/column: yuv420p needs even ones).
        audio: (n,) float32 mono at ``rate`` Hz, or None/empty for no audio track.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t, h, w = frames.shape[:3]
    h2, w2 = h - h % 2, w - w % 2
    fps = fractions.Fraction(t / max(seconds, 1e-3)).limit_denominator(1000)
    with write_whole(path, "wb") as f:
        with av.open(f, "w", format="mp4") as c:
            vs = add_video(c, "libx264", fps, (w2, h2), {"preset": "veryfast", "crf": "20"})
            as_ = add_audio(c, rate) if audio is not None and audio.size else None
            mux_video(c, vs, (np.ascontiguousarray(img[:h2, :w2]) for img in frames), fps)
            if as_ is not None:
                mux_audio(c, as_, np.clip(audio.astype(np.float32), -1.0, 1.0), rate)
    return path


def session_consent(records: list[dict]) -> bool | None:
    """The last ``consent`` field of the session's records (a withdrawal wins over an
    earlier consent), True only for a JSON true; None if no record has one."""
    vals = [r["consent"] for r in records if "consent" in r]
    return (vals[-1] is True) if vals else None


def _window_mp4s(session: str, records: list[dict], media_dir: Path, out_dir: Path, label_field: str,
                 skipped: Counter) -> list[tuple[str, str, str]]:
    """One consented session's labelled windows with media → mp4s in `out_dir`; returns
    (session, window name, label) per mp4 and counts each skipped window in `skipped`."""
    written = []
    for r in records:
        if not isinstance(r.get("index"), int) or not isinstance(r.get("run"), int):
            continue  # not a window record
        if "consent" in r and r["consent"] is not True:
            skipped["no_consent_windows"] += 1
            continue
        label = r.get(label_field)
        label = normalize_label(label) if isinstance(label, str) else ""
        if not label:
            skipped["unlabelled"] += 1
            continue
        name = f"{r['run']:03d}_{r['index']:05d}"
        npz = media_dir / f"window_{name}.npz"
        if not npz.is_file():
            skipped["no_media"] += 1
            continue
        with np.load(npz) as z:
            frames, audio, rate = z["frames"], z["audio"], int(z["rate"])
        if frames.ndim != 4 or frames.shape[0] == 0:
            skipped["no_video"] += 1
            continue
        seconds = float(r.get("end", 0.0)) - float(r.get("start", 0.0))
        write_window_mp4(out_dir / f"{name}.mp4", frames, seconds, audio, rate)
        written.append((session, name, label))
    return written


def build(session_dir: str | Path, out: str | Path, label_field: str = LABEL_FIELD,
          sessions: list[str] | None = None, consented: bool = False, seed: int = 0) -> dict:
    """Write the manifest and media (module docstring); returns the summary."""
    session_dir, out = Path(session_dir), Path(out)
    media_root = out.parent / f"{out.stem}_media"
    logs = session_logs(session_dir)
    if sessions:
        want = {check_id("session", s) for s in sessions}
        missing = want - {p.stem for p in logs}
        if missing:
            raise FileNotFoundError(f"{session_dir}: no study log for session(s) {sorted(missing)}")
        logs = [p for p in logs if p.stem in want]
    skipped: Counter = Counter()
    pending: list[tuple[str, str, str]] = []  # session, window name, label
    used = 0
    for log in logs:
        records = [r for r in read_jsonl(log, allow_partial_tail=True) if isinstance(r, dict)]
        consent = session_consent(records)
        if consent is False or (consent is None and not consented):
            skipped["no_consent_sessions"] += 1
            why = ("its log says consent: false (not given or withdrawn)" if consent is False
                   else "no consent recorded (--consented)")
            print(f"warning: session {log.stem} not used: {why}", file=sys.stderr)
            continue
        used += 1
        pending += _window_mp4s(log.stem, records, session_dir / f"{log.stem}_media", media_root / log.stem,
                                label_field, skipped)
    options = sorted({p[2] for p in pending})
    if len(options) < 2:
        options = sorted(set(options) | set(DFEW_CLASSES))
    rng = random.Random(seed)
    rows = []
    for session, name, label in pending:
        prompt, opts = classification_prompt(options, rng)
        rows.append(make_sample(f"{SOURCE}/{session}/{name}", TASK_EMOTION_CLS, prompt,
                                classification_answer(label), video=f"{media_root.name}/{session}/{name}.mp4",
                                label=label, options=opts))
    write_lines(rows, out)
    return {"sessions": used, "samples": len(rows), "skipped": dict(skipped)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model.data.curate study",
                                description="Build a labelled manifest from consented study recordings.")
    p.add_argument("session_dir", help="the study log folder (app.py --log-dir)")
    p.add_argument("--out", required=True, help="manifest to write; media go to <out stem>_media/")
    p.add_argument("--label-field", default=LABEL_FIELD,
                   help=f"record field with the participant's self-reported label (default {LABEL_FIELD})")
    p.add_argument("--session", action="append", help="use only this session id (repeatable)")
    p.add_argument("--consented", action="store_true",
                   help="state that every participant of sessions whose log has no consent field (an "
                        "older app) consented to training use; consent: false is never overridden")
    p.add_argument("--seed", type=int, default=0, help="question/option order seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out and its media")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> int:
        if args.label_field in MODEL_FIELDS:
            raise CliError(f"--label-field {args.label_field}: that field is the model's own output, not "
                           "the participant's; name the field holding the self-reported label")
        if not Path(args.session_dir).is_dir():
            raise CliError(f"{args.session_dir}: no such folder")
        out = check_out(args.out, args.overwrite, folder=False)
        check_out(out.parent / f"{out.stem}_media", args.overwrite, option="media folder")
        try:
            summary = build(args.session_dir, out, args.label_field, args.session, args.consented, args.seed)
        except (FileNotFoundError, StudyLogError) as e:
            raise CliError(str(e)) from None
        if summary["sessions"] == 0 and summary["skipped"].get("no_consent_sessions"):
            print("warning: no session was used; pass --consented only if every participant consented",
                  file=sys.stderr)
        print(json.dumps(summary))
        return 0

    return run_main(work)


if __name__ == "__main__":
    sys.exit(main())
