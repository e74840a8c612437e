"""Analyse one video file with Omni-Emotion.

    python -m model.serve.infer --model DIR --video FILE [--json] [--prompt TEXT]

Takes the clip's 8 frames and face crops exactly as a live window over the whole clip
would (`model.data.preprocess.preprocess_sample` → `live.window.file_window`) and its
16 kHz audio, runs one analysis and prints the answer (streamed) or, with
`--json`, one object: {"text", "label", "labels", "tokens": {"visual", "face", "audio",
"text"}, "face": "present"|"absent", "seconds"}. Errors follow `live.cli`: one line on
stderr; bad input (a missing or damaged checkpoint, a missing or unreadable video, no
audio track, --device cuda without CUDA) exits 2 before the model loads, a failure while
loading or generating exits 1.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from live.cli import DEVICE_DEFAULT, DEVICE_HELP, CliError, resolve_device, run_main
from model.serve.generate import ANALYSIS_MAX_NEW_TOKENS


def _probe(video: Path, audio_required: bool) -> None:
    """Check the streams before any heavy work, so bad input fails fast and quietly."""
    import av

    try:
        with av.open(str(video)) as container:
            has_video, has_audio = bool(container.streams.video), bool(container.streams.audio)
    except (av.error.FFmpegError, OSError) as err:
        raise ValueError(f"cannot read video: {video}: {err}") from None
    if not has_video:
        raise ValueError(f"{video} has no video stream")
    if audio_required and not has_audio:
        raise ValueError(f"{video} has no audio stream (pass --no-audio to analyse the picture alone)")


def _decode(video: Path, faces: bool, audio_required: bool):
    """File → Clip, failing loudly on a missing, unreadable or audio-less file."""
    from model.data.preprocess import (DecodeError, clip_arrays, default_face_tracker, no_face_tracker,
                                       preprocess_sample)
    from model.net.processor import Clip

    if not video.is_file():
        raise ValueError(f"no such file: {video}")
    _probe(video, audio_required)

    try:
        arrays = preprocess_sample({"id": video.name, "video": str(video.resolve())}, video.parent,
                                   default_face_tracker if faces else no_face_tracker)
    except DecodeError as err:
        raise ValueError(f"cannot read video: {err}") from None
    if audio_required and not bool(arrays["has_audio"]):
        raise ValueError(f"{video}: the audio stream holds no samples (pass --no-audio)")
    return Clip(**clip_arrays(arrays))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.serve.infer", description="Analyse one video file.")
    ap.add_argument("--model", required=True, help="Omni-Emotion checkpoint folder")
    ap.add_argument("--video", required=True, help="video file (mp4, mkv, webm, ...)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--prompt", help="instruction (default: the paper's multimodal analysis prompt)")
    ap.add_argument("--options", help="comma-separated label options to choose from")
    ap.add_argument("--max-new-tokens", type=int, default=ANALYSIS_MAX_NEW_TOKENS, help="generation budget")
    ap.add_argument("--no-audio", action="store_true", help="accept a file without an audio track")
    ap.add_argument("--no-faces", action="store_true", help="skip face detection (face branch absent)")
    ap.add_argument("--device", default=DEVICE_DEFAULT, help=DEVICE_HELP)
    args = ap.parse_args(argv)

    return run_main(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from model.checkpoint.loading import check_checkpoint

    started = time.perf_counter()
    model_dir = check_checkpoint(args.model)  # missing or damaged: exit 2, before any work
    device = resolve_device(args.device)
    if args.max_new_tokens < 1:
        raise CliError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    try:  # the input file, checked and decoded before the model loads
        clip = _decode(Path(args.video), faces=not args.no_faces, audio_required=not args.no_audio)
    except (ValueError, OSError) as err:
        raise CliError(err) from None
    from model.serve.analyser import DEFAULT_PROMPT, OmniEmotionAnalyser

    options = [o.strip() for o in args.options.split(",") if o.strip()] if args.options else None
    analyser = OmniEmotionAnalyser.load(model_dir, device=device, prompt=args.prompt or DEFAULT_PROMPT,
                                        options=options, max_new_tokens=args.max_new_tokens)
    printed = [0]

    def stream(text: str) -> None:
        sys.stdout.write(text[printed[0]:])
        sys.stdout.flush()
        printed[0] = len(text)

    result = analyser.analyse(clip, on_text=None if args.json else stream)
    result["face"] = "present" if result["face_frames"] else "absent"
    result["seconds"] = round(time.perf_counter() - started, 3)
    if args.json:
        keep = ("text", "label", "labels", "tokens", "face", "face_frames", "audio", "seconds", "model")
        print(json.dumps({k: result[k] for k in keep}))
    else:
        print(f"\n\nlabel: {result['label']}  words: {', '.join(result['labels'])}  ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
