"""``python -m model.data.curate sre``: the self-reviewed emotion (SRE) run of paper §3.1.

    python -m model.data.curate sre MANIFEST --out DIR --vlm URL --vlm-model NAME \\
        --llm URL --llm-model NAME --asr WHISPER|none [--alm URL --alm-model NAME] \\
        [--threshold 5] [--concurrency N] [--shard I/N] [--limit N] [--dry-run] \\
        [--max-frames N] [--face-crops N]

Per clip of MANIFEST (samples with a gold ``label``, as ``model.data.builders`` writes),
the five stages of ``stages``; results appended to DIR as each clip finishes
(``records``). Outputs, resume, ``--shard`` / ``merge``, ``--dry-run``, exit codes and
the last stdout line: docs/curation.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from live.contract.cli import DEVICE_DEFAULT, DEVICE_HELP, CliError, check_out, resolve_device, run_main
from live.contract.files import write_json
from model.data.manifest import ManifestError, read_manifest

from . import records as R
from .endpoint import (API_KEY_ENV, DEFAULT_RETRIES, DEFAULT_TIMEOUT_S, Endpoint, EndpointError,
                       base_url)
from .stages import (AUDIO_TOKENS, CONSISTENCY_PROMPT, CONSISTENCY_TOKENS, DEFAULT_FACE_CROPS,
                     DEFAULT_MAX_FRAMES, DEFAULT_THRESHOLD, FACE_PROMPT, FACE_TOKENS, REVIEW_PROMPT,
                     REVIEW_TOKENS, SCENE_MAX_SIDE, SCENE_PROMPT, SCENE_TOKENS, Models, Settings,
                     clip_duration, curate_clip, n_scene_frames)

# dry-run estimates (Qwen2-VL counts one token per 28x28 px; Qwen2-Audio 25 tokens/s)
PATCH_PX = 28
SCENE_IMAGE_TOKENS = math.ceil(SCENE_MAX_SIDE / PATCH_PX) * math.ceil(SCENE_MAX_SIDE * 3 / 4 / PATCH_PX)  # 4:3
FACE_IMAGE_TOKENS = math.ceil(224 / PATCH_PX) ** 2
AUDIO_TOKENS_PER_S = 25
CHARS_PER_TOKEN = 4  # English text
CUES_TEXT_TOKENS = 600  # the cues quoted in the consistency prompt, roughly
PENDING_PER_WORKER = 2  # clips queued per worker (memory stays flat on huge manifests)


def shard_of(sample_id: str, n: int) -> int:
    """THE sharding rule: a clip's shard from its id's hash (same on every machine)."""
    return int(hashlib.sha256(sample_id.encode("utf-8")).hexdigest()[:15], 16) % n


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise CliError(f"--shard {text!r}: give I/N, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise CliError(f"--shard {text}: need N >= 1 and 0 <= I < N")
    return i, n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model.data.curate sre", description=__doc__.split("\n\n")[0])
    p.add_argument("manifest", help="manifest of clips with a gold 'label' (model.data.builders)")
    p.add_argument("--out", required=True, help="output folder (rerun with the same folder to resume)")
    p.add_argument("--vlm", required=True, help="vision-language model server URL (OpenAI-compatible)")
    p.add_argument("--vlm-model", required=True, help="model name on that server")
    p.add_argument("--llm", required=True, help="text LLM server URL (consistency, self-review)")
    p.add_argument("--llm-model", required=True)
    p.add_argument("--asr", required=True, help="Whisper checkpoint folder or hub id, or 'none'")
    p.add_argument("--alm", help="optional audio model server URL (tone/prosody caption)")
    p.add_argument("--alm-model", help="model name on the --alm server")
    p.add_argument("--threshold", type=int, default=DEFAULT_THRESHOLD, help="keep scores >= this (0-10)")
    p.add_argument("--concurrency", type=int, default=4, help="clips in flight")
    p.add_argument("--shard", default="0/1", help="I/N: this machine's part of the manifest (I from 0)")
    p.add_argument("--limit", type=int, help="at most this many clips of the shard (manifest order)")
    p.add_argument("--dry-run", action="store_true", help="print calls, images, tokens; call nothing")
    p.add_argument("--max-frames", type=int, default=DEFAULT_MAX_FRAMES, help="scene frames (1 fps) at most")
    p.add_argument("--face-crops", type=int, default=DEFAULT_FACE_CROPS, help="face crops per clip")
    p.add_argument("--age-gender", action="store_true", help="also ask apparent age and gender")
    p.add_argument("--cache", help="answer cache folder (default OUT/cache); runs may share one")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per request")
    p.add_argument("--retries", type=int, default=DEFAULT_RETRIES, help="extra attempts per request")
    p.add_argument("--api-key-env", default=API_KEY_ENV, help="environment variable with the API key")
    p.add_argument("--device", default=DEVICE_DEFAULT, help=f"for Whisper: {DEVICE_HELP}")
    return p


def _check_args(args) -> tuple[int, int]:
    if not 0 <= args.threshold <= 10:
        raise CliError(f"--threshold {args.threshold}: must be 0..10")
    for name in ("concurrency", "max_frames", "face_crops"):
        if getattr(args, name) < 1:
            raise CliError(f"--{name.replace('_', '-')} must be >= 1")
    if args.limit is not None and args.limit < 1:
        raise CliError("--limit must be >= 1")
    if args.timeout <= 0 or args.retries < 0:
        raise CliError("--timeout must be > 0 and --retries >= 0")
    if (args.alm is None) != (args.alm_model is None):
        raise CliError("--alm and --alm-model go together")
    for opt in ("vlm", "llm", "alm"):
        if getattr(args, opt) is not None:
            try:
                base_url(getattr(args, opt))
            except ValueError as e:
                raise CliError(f"--{opt}: {e}") from None
    return parse_shard(args.shard)


def _select(args, shard: tuple[int, int]) -> tuple[list[dict], Path]:
    """The shard's samples (manifest order, --limit applied) and the manifest's folder."""
    path = Path(args.manifest)
    try:
        samples = read_manifest(path)
    except (FileNotFoundError, ManifestError) as e:
        raise CliError(str(e)) from None
    unlabelled = [s["id"] for s in samples if not isinstance(s.get("label"), str) or not s["label"].strip()]
    if unlabelled:
        raise CliError(f"{path}: {len(unlabelled)} samples have no gold 'label' (first: {unlabelled[0]}); "
                       "curation needs a labelled set (model.data.builders)")
    i, n = shard
    chosen = [s for s in samples if shard_of(s["id"], n) == i]
    return (chosen[: args.limit] if args.limit else chosen), path.parent


def _check_run_folder(out: Path, settings: dict) -> None:
    """A folder holds one run: a non-empty folder must be an earlier run of the same
    manifest and shard."""
    check_out(out, resume=True)
    run = out / R.RUN
    if not out.exists() or not any(out.iterdir()):
        return
    if not run.is_file():
        raise CliError(f"--out {out} is not empty and holds no curation run ({R.RUN}); choose another folder")
    old = json.loads(run.read_text(encoding="utf-8"))
    for key in ("manifest", "shard"):
        if old.get(key) != settings[key]:
            raise CliError(f"--out {out} holds a run with {key} {old.get(key)!r}, not {settings[key]!r}; "
                           "use another folder (merge combines folders)")


def _done_ids(out: Path) -> set[str]:
    """Finished ids, read-only (a torn last line is ignored): for the dry run."""
    return {r["id"] for name in (R.SRE, R.REJECTED) for r in R.read_records(out / name, torn_ok=True)}


def dry_run(samples: list[dict], base: Path, settings: Settings, alm: bool) -> dict:
    """What the run would send: calls, images, audio seconds, tokens (estimated)."""
    calls = images = unreadable = 0
    audio_s = tokens_in = 0.0
    fixed = sum(len(p) for p in (SCENE_PROMPT, FACE_PROMPT, CONSISTENCY_PROMPT, REVIEW_PROMPT)) / CHARS_PER_TOKEN
    for s in samples:
        try:
            video = Path(s["video"]) if Path(s["video"]).is_absolute() else base / s["video"]
            duration = clip_duration(video)
        except Exception:  # noqa: BLE001 - counted, the real run records why
            unreadable += 1
            continue
        n_scene = n_scene_frames(duration, settings)
        calls += 4 + alm
        images += n_scene + settings.face_crops
        tokens_in += n_scene * SCENE_IMAGE_TOKENS + settings.face_crops * FACE_IMAGE_TOKENS
        tokens_in += fixed + CUES_TEXT_TOKENS
        if alm:
            audio_s += min(duration, 30.0)
            tokens_in += min(duration, 30.0) * AUDIO_TOKENS_PER_S
    out_max = (SCENE_TOKENS + FACE_TOKENS + CONSISTENCY_TOKENS + REVIEW_TOKENS + AUDIO_TOKENS * alm)
    n = len(samples) - unreadable
    return {"clips": len(samples), "unreadable": unreadable, "calls": calls, "images": images,
            "audio_seconds": round(audio_s, 1), "tokens_in_est": int(tokens_in),
            "tokens_out_max": n * out_max}


def _load_asr(name: str, device: str):
    if name.lower() == "none":
        return None
    from .asr import WhisperASR

    try:
        return WhisperASR(name, resolve_device(device))
    except (OSError, ValueError) as e:
        raise CliError(f"--asr {name}: cannot load a Whisper checkpoint ({e})") from None


def run(samples: list[dict], base: Path, out: Path, models: Models, settings: Settings,
        concurrency: int, default_source: str, progress: bool = True) -> None:
    """Curate ``samples`` into ``out`` (resume state already prepared)."""
    from tqdm import tqdm

    outputs = R.Outputs(out)
    bar = tqdm(total=len(samples), unit="clip", file=sys.stderr, disable=not progress)
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="curate")
    try:
        pending: set = set()
        it = iter(samples)
        while True:
            while len(pending) < concurrency * PENDING_PER_WORKER:
                s = next(it, None)
                if s is None:
                    break
                pending.add(pool.submit(curate_clip, s, base, models, settings, default_source))
            if not pending:
                break
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                o = fut.result()
                outputs.append(R.CLUES, o.clues)
                outputs.append(R.OUTCOME_FILE[o.kind], o.record)  # the commit
                bar.update(1)
    finally:  # on Ctrl-C: queued clips are dropped, clips in flight are lost (redone next run)
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
        outputs.close()


def _run(args, out: Path, samples: list[dict], base: Path, settings: Settings, run_settings: dict,
         default_source: str, t0: float) -> int:
    """The run proper, with ``out`` held (`records.claim`): endpoints and ASR checked and
    loaded, then every clip not yet finished curated."""
    cache = Path(args.cache) if args.cache else out / R.CACHE
    eps = {}
    for opt, url, model in (("vlm", args.vlm, args.vlm_model), ("llm", args.llm, args.llm_model),
                            ("alm", args.alm, args.alm_model)):
        if url is None:
            continue
        eps[opt] = Endpoint(url, model, cache_dir=cache, retries=args.retries,
                            timeout_s=args.timeout, api_key_env=args.api_key_env)
        try:
            eps[opt].check()
        except EndpointError as e:
            raise CliError(f"--{opt} {e}; start the server or fix the URL") from None
    asr = _load_asr(args.asr, args.device)
    write_json(out / R.RUN, {**run_settings, "vlm_model": args.vlm_model, "llm_model": args.llm_model,
                             "alm_model": args.alm_model, "asr": args.asr,
                             "threshold": args.threshold, "max_frames": args.max_frames,
                             "face_crops": args.face_crops, "age_gender": args.age_gender},
               ensure_ascii=False)
    done = R.prepare_resume(out, {s["id"] for s in samples})
    todo = [s for s in samples if s["id"] not in done]
    models = Models(vlm=eps["vlm"], llm=eps["llm"], asr=asr, alm=eps.get("alm"))
    run(todo, base, out, models, settings, args.concurrency, default_source)
    print(json.dumps(R.finish(out, time.monotonic() - t0, args.threshold)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)

    def work() -> int:
        t0 = time.monotonic()
        shard = _check_args(args)
        samples, base = _select(args, shard)
        settings = Settings(max_frames=args.max_frames, face_crops=args.face_crops,
                            threshold=args.threshold, age_gender=args.age_gender)
        default_source = Path(args.manifest).stem
        if args.dry_run:
            done = _done_ids(out) if out.is_dir() else set()
            todo = [s for s in samples if s["id"] not in done]
            est = dry_run(todo, base, settings, args.alm is not None)
            est["finished"] = len(samples) - len(todo)
            print(f"dry run: {est['clips']} clips to do ({est['finished']} already finished), "
                  f"{est['calls']} calls, {est['images']} images, ~{est['tokens_in_est']:,} input tokens, "
                  f"<= {est['tokens_out_max']:,} output tokens", file=sys.stderr)
            print(json.dumps(est))
            return 0
        run_settings = {"manifest": str(Path(args.manifest).resolve()), "shard": args.shard}
        _check_run_folder(out, run_settings)
        existed = out.exists()
        lock = R.claim(out)  # one run per folder (before slow loading); `merge` refuses it while held
        try:
            return _run(args, out, samples, base, settings, run_settings, default_source, t0)
        finally:
            lock.release()
            if not existed and not any(out.iterdir()):
                out.rmdir()  # refused before any work: leave nothing behind

    return run_main(work)


if __name__ == "__main__":
    sys.exit(main())
