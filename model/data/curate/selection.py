"""HRE selection (paper §3.2): N clips per source dataset, none of them in SRE.

    python -m model.data.curate hre-select MANIFEST --sre SRE_DIR [--sre SRE_DIR2 ...]
        --out SEL.jsonl [--per-source 700] [--seed 0] [--overwrite]

MANIFEST is the labelled manifest the SRE run read; every id in ``SRE_DIR/clues.jsonl``
is excluded. Per source the remaining ids are sorted and shuffled with a generator
seeded by (seed, source), so the selection depends only on the sets of ids and the
seed. The source rule and the stdout line: docs/curation.md ("hre-select").
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

from live.contract.cli import CliError, check_out, run_main
from model.data.curate.records import CLUES, rewrite
from model.data.curate.stages import source_of
from model.data.manifest import ManifestError, iter_jsonl, validate_sample

PER_SOURCE = 700  # clips per source dataset (paper §3.2: 700 each, 3,500 in all)


def sre_ids(sre_dirs: list[str | Path]) -> set[str]:
    """Every id in the ``clues.jsonl`` of each SRE output folder."""
    ids: set[str] = set()
    for d in sre_dirs:
        path = Path(d) / CLUES
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file; --sre must be an SRE --out folder")
        ids.update(str(row.get("id")) for _, row in iter_jsonl(path))
    return ids


def select(samples: list[dict], exclude: set[str], per_source: int,
           seed: int = 0) -> tuple[list[dict], dict[str, int]]:
    """(selected samples, available count per source). Deterministic (module docstring);
    output grouped by source in sorted source order."""
    if per_source < 1:
        raise ValueError(f"per_source must be at least 1, got {per_source}")
    by_source: dict[str, dict[str, dict]] = defaultdict(dict)
    for s in samples:
        if s["id"] not in exclude:
            by_source[source_of(s)][s["id"]] = s
    chosen: list[dict] = []
    for src in sorted(by_source):
        ids = sorted(by_source[src])
        random.Random(f"{seed}:{src}").shuffle(ids)
        chosen.extend(by_source[src][i] for i in ids[:per_source])
    return chosen, {src: len(v) for src, v in sorted(by_source.items())}


def read_samples(path: str | Path) -> list[dict]:
    """The manifest's lines as written (each validated; ids unique)."""
    out, seen = [], set()
    for lineno, obj in iter_jsonl(path):
        validate_sample(obj, f"{path}:{lineno}")
        if obj["id"] in seen:
            raise ManifestError(f"{path}:{lineno}: duplicate id {obj['id']!r}")
        seen.add(obj["id"])
        out.append(obj)
    return out


def write_lines(rows: list[dict], out: str | Path) -> None:
    """JSONL, whole (``records.rewrite``: temp name, fsync, rename), its folder made."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    rewrite(Path(out), rows)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model.data.curate hre-select",
                                description="Select HRE review candidates: N per source, disjoint from SRE.")
    p.add_argument("manifest", help="the labelled manifest the SRE run read")
    p.add_argument("--sre", action="append", required=True, metavar="SRE_DIR",
                   help="an SRE --out folder whose clues.jsonl ids are excluded (repeat for shards)")
    p.add_argument("--out", required=True, help="selection manifest to write (JSONL)")
    p.add_argument("--per-source", type=int, default=PER_SOURCE,
                   help=f"clips per source dataset (default {PER_SOURCE}, as in the paper)")
    p.add_argument("--seed", type=int, default=0, help="selection seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> int:
        if args.per_source < 1:
            raise CliError(f"--per-source must be at least 1, got {args.per_source}")
        out = check_out(args.out, args.overwrite, folder=False)
        try:
            samples = read_samples(args.manifest)
            exclude = sre_ids(args.sre)
        except (FileNotFoundError, ManifestError) as e:
            raise CliError(str(e)) from None
        chosen, available = select(samples, exclude, args.per_source, args.seed)
        write_lines(chosen, out)
        counts: dict[str, int] = defaultdict(int)
        for s in chosen:
            counts[source_of(s)] += 1
        for src, n in available.items():
            if n < args.per_source:
                print(f"warning: source {src or '(no id prefix)'!r} has only {n} clips outside SRE "
                      f"(--per-source {args.per_source}); all taken", file=sys.stderr)
        print(json.dumps({"selected": len(chosen), "per_source": dict(counts), "available": available,
                          "excluded": sum(1 for s in samples if s["id"] in exclude)}))
        return 0

    return run_main(work)


if __name__ == "__main__":
    sys.exit(main())
