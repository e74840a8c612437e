"""Analyse one video file with Omni-Emotion.

    python -m model.serve.infer --model DIR --video FILE [--json] [--prompt TEXT]

Takes the clip's 8 frames and face crops exactly as a live window over the whole clip
would (`model.data.preprocess.preprocess_sample` → `live.window.file_window`) and its
16 kHz audio, runs one analysis and prints the answer (streamed) or, with
`--json`, one object: {"text", "label", "labels", "tokens": {"visual", "face", "audio",
"text"}, "face": "present"|"absent", "audio": "present"|"absent", "seconds",
"notes": [what was missing, e.g. no audio]}. A video without audio is analysed from the
picture alone, as `live.run` and the page's File tab do; the output says so ("audio":
"absent", a note, and "no audio" in the plain-text summary; a missing label reads "no
label"). Errors: the `live.contract.cli` convention (inputs checked before the model loads).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from live.contract.cli import DEVICE_DEFAULT, DEVICE_HELP, CliError, resolve_device, run_main
from model.serve.generate import ANALYSIS_MAX_NEW_TOKENS


def _probe(video: Path) -> None:
    """Check the streams before any heavy work, so bad input fails fast and quietly."""
    import av

    try:
        with av.open(str(video)) as container:
            has_video = bool(container.streams.video)
    except (av.error.FFmpegError, OSError) as err:
        raise ValueError(f"cannot read video: {video}: {err}") from None
    if not has_video:
        raise ValueError(f"{video} has no video stream")


def _decode(video: Path, faces: bool, use_audio: bool):
    """File → (Clip, notes). A file without audio (no track, or a silent-length empty
    one) is analysed from the picture alone, as `live.run` and the page's File tab do;
    ``notes`` then says so. ``use_audio`` False leaves a present track out too.
    Raises ValueError for a missing or unreadable file."""
    from dataclasses import replace

    from model.data.preprocess import DecodeError, default_face_tracker, no_face_tracker, preprocess_sample

    if not video.is_file():
        raise ValueError(f"no such file: {video}")
    _probe(video)

    try:
        clip = preprocess_sample({"id": video.name, "video": str(video.resolve())}, video.parent,
                                   default_face_tracker if faces else no_face_tracker)
    except DecodeError as err:
        raise ValueError(f"cannot read video: {err}") from None
    notes = []
    if not clip.has_audio:
        notes.append(f"{video.name} has no audio: analysed from the picture alone")
    elif not use_audio:
        clip = replace(clip, audio=None, has_audio=False)  # the one absent form (live.window.Window)
        notes.append("audio left out (--no-audio): analysed from the picture alone")
    return clip, notes


def summary_line(result: dict) -> str:
    """The plain-text output's last line: label, words, what was missing, time."""
    parts = [f"label: {result['label']}" if result.get("label") else "no label",
             f"words: {', '.join(result['labels'])}" if result.get("labels") else "no open-vocabulary words"]
    if result.get("audio") == "absent":
        parts.append("no audio (picture alone)")
    return "  ".join(parts) + f"  ({result['seconds']} s)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.serve.infer", description="Analyse one video file.")
    ap.add_argument("--model", required=True, help="Omni-Emotion checkpoint folder")
    ap.add_argument("--video", required=True, help="video file (mp4, mkv, webm, ...)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--prompt", help="instruction (default: the paper's multimodal analysis prompt)")
    ap.add_argument("--options", help="comma-separated label options to choose from")
    ap.add_argument("--max-new-tokens", type=int, default=ANALYSIS_MAX_NEW_TOKENS, help="generation budget")
    ap.add_argument("--no-audio", action="store_true",
                    help="leave the audio track out (a file without one is analysed from the picture alone anyway)")
    ap.add_argument("--no-faces", action="store_true", help="skip face detection (face branch absent)")
    ap.add_argument("--device", default=DEVICE_DEFAULT, help=DEVICE_HELP)
    args = ap.parse_args(argv)

    return run_main(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from model.checkpoint.check import check_checkpoint

    started = time.perf_counter()
    model_dir = check_checkpoint(args.model)  # missing or damaged: exit 2, before any work
    device = resolve_device(args.device)
    if args.max_new_tokens < 1:
        raise CliError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    try:  # the input file, checked and decoded before the model loads
        clip, notes = _decode(Path(args.video), faces=not args.no_faces, use_audio=not args.no_audio)
    except (ValueError, OSError) as err:
        raise CliError(err) from None
    from model.serve.analyser import DEFAULT_PROMPT
    from model.serve.loader import load_analyser

    options = [o.strip() for o in args.options.split(",") if o.strip()] if args.options else None
    analyser = load_analyser(model_dir, None, device, prompt=args.prompt or DEFAULT_PROMPT,
                             options=options, max_new_tokens=args.max_new_tokens)
    printed = [0]

    def stream(text: str, parsed=None) -> None:
        sys.stdout.write(text[printed[0]:])
        sys.stdout.flush()
        printed[0] = len(text)

    for note in notes:
        print(f"note: {note}", file=sys.stderr, flush=True)
    result = analyser.analyse(clip, on_partial=None if args.json else stream)
    result["face"] = "present" if result["face_frames"] else "absent"
    result["seconds"] = round(time.perf_counter() - started, 3)
    if args.json:
        keep = ("text", "label", "labels", "tokens", "face", "face_frames", "audio", "seconds", "model")
        print(json.dumps({**{k: result[k] for k in keep}, "notes": notes}))
    else:
        stream(result["text"])  # the end the stream held back (it stopped inside a character)
        print("\n\n" + summary_line(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
