"""Build Omni-Emotion checkpoints.

    python -m model.checkpoint.build --preset tiny --out DIR                 # random tiny model
    python -m model.checkpoint.build --preset 0.5b|7b --random --out DIR [--dtype bfloat16]
                                     # real-size architecture, random weights, offline tokenizer
    python -m model.checkpoint.build --preset 0.5b|7b --describe --json      # parameter counts (meta)
    python -m model.checkpoint.build --preset 0.5b|7b --from-pretrained --out DIR [--face model.pt]

Errors: the `live.contract.cli` convention.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from live.contract.cli import CliError, check_out, run_main

from model.net.config import FUSIONS
from model.net.presets import HUB_SOURCES, PRESETS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m model.checkpoint.build", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=PRESETS, required=True)
    ap.add_argument("--out", help="checkpoint folder to write")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out folder's files")
    ap.add_argument("--describe", action="store_true", help="print parameter counts (meta device)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--from-pretrained", action="store_true", help="compose from public checkpoints")
    ap.add_argument("--random", action="store_true",
                    help="random weights at the preset's real size (no download; config marks it random)")
    ap.add_argument("--base", help="LLaVA-OneVision hub id or folder (default: the preset's)")
    ap.add_argument("--audio", help="Whisper hub id or folder (default: openai/whisper-large-v3)")
    ap.add_argument("--face", help="FaceXFormer model.pt (omitted: random face encoder)")
    ap.add_argument("--fusion", choices=FUSIONS, default="video_concat")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    return run_main(lambda: _run(ap, args))


def _run(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.describe:
        from model.checkpoint.loading import describe

        counts = describe(args.preset, fusion=args.fusion)
        print(json.dumps(counts) if args.json else "\n".join(f"{k:>10}: {v:,}" for k, v in counts.items()))
        return 0
    _check_args(ap, args)
    from model.checkpoint import loading  # seconds of imports: after every check

    if args.random:
        loading.build_random(args.preset, args.out, dtype=DTYPES[args.dtype], seed=args.seed, fusion=args.fusion)
    elif args.from_pretrained:
        src = HUB_SOURCES.get(args.preset, {})
        model, processor = loading.compose_from_pretrained(
            args.preset,
            base=args.base or src["base"],
            audio=args.audio or src["audio"],
            face=args.face,
            dtype=DTYPES[args.dtype],
            fusion=args.fusion,
        )
        loading.save(model, processor, args.out)
    else:
        loading.build_tiny(args.out, seed=args.seed, fusion=args.fusion)
    if args.json:
        print(json.dumps({"out": args.out, "preset": args.preset, "random": bool(args.random or not args.from_pretrained)}))
    else:
        print(f"wrote {args.preset} checkpoint{' (random weights)' if args.random else ''} to {args.out}")
    return 0


def _check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every usage error of a build, before anything loads or downloads."""
    if not args.out:
        ap.error("--out is required unless --describe")
    check_out(args.out, args.overwrite)  # before minutes of downloading
    if args.random and args.from_pretrained:
        ap.error("--random and --from-pretrained exclude each other")
    if not (args.random or args.from_pretrained or args.preset == "tiny"):
        ap.error(f"--preset {args.preset}: give --random (random weights) or --from-pretrained, or --describe")
    if args.from_pretrained:
        if args.preset == "tiny" and not (args.base and args.audio):
            ap.error("--preset tiny --from-pretrained needs --base and --audio folders")
        if args.face and not Path(args.face).is_file():
            raise CliError(f"FaceXFormer checkpoint not found: {args.face}")
        for flag, folder in (("--base", args.base), ("--audio", args.audio)):
            if args.preset == "tiny" and not Path(folder).is_dir():
                raise CliError(f"{flag} folder not found: {folder}")


if __name__ == "__main__":
    sys.exit(main())
