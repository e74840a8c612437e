"""Export reviewed HRE clips as a training manifest.

    python -m model.data.curate export CAND_DIR --out hre.jsonl
        [--reviewer ID | --require-agreement [--reviewers A,B]] [--overwrite]

The kept clips (accepted or edited) in the pool's order, in ``sre.jsonl``'s manifest
format (the answer rebuilt by ``model.net.templates.reasoning_answer`` from the
reviewed text), so ``model.train --phase 3`` reads ``hre.jsonl`` as is. Which decisions
count (``--reviewer`` / ``--require-agreement``), the fields and the stdout line:
docs/curation.md "Export".
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from live.contract.cli import CliError, check_out, run_main
from model.net.answers import normalize_label
from model.data.curate.review_pool import KEEP, Candidate, ReviewError, load_candidates, pick_reviewers, read_decisions, \
    reviewers
from model.data.curate.selection import write_lines
from model.data.manifest import ManifestError, validate_sample
from model.net.templates import reasoning_answer


def hre_sample(cand: Candidate, decision: dict, reviewer: str) -> dict:
    """The manifest line of a kept clip (module docstring)."""
    row = json.loads(json.dumps(cand.sample))  # deep copy of the sre.jsonl line
    labels = list(dict.fromkeys(n for n in map(normalize_label, decision.get("labels") or cand.labels) if n))
    expl = decision.get("explanation") or cand.explanation
    row["conversations"][-1]["content"] = reasoning_answer(expl, labels)
    row["labels"] = labels
    row["reviewer"] = reviewer
    if cand.video is not None:
        row["video"] = str(cand.video)
    return validate_sample(row, f"{cand.id}")


def export(cand_dir: str | Path, out: str | Path, names: list[str], require_all: bool) -> dict:
    """Write the manifest; returns the counts. ``names``: one reviewer, or (with
    ``require_all``) the reviewers who must all keep a clip."""
    out = Path(out)
    decisions = [read_decisions(cand_dir, n) for n in names]
    rows, counts = [], {"exported": 0, "rejected": 0, "disagreed": 0, "unreviewed": 0}
    for cand in load_candidates(cand_dir):
        got = [d.get(cand.id) for d in decisions]
        if any(g is None for g in got):
            counts["unreviewed"] += 1
            continue
        kept = [g["decision"] in KEEP for g in got]
        if not any(kept):
            counts["rejected"] += 1
            continue
        if not all(kept):
            counts["disagreed"] += 1
            continue
        rows.append(hre_sample(cand, got[0], ",".join(names)))
    counts["exported"] = len(rows)
    write_lines(rows, out)
    return counts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model.data.curate export",
                                description="Write the reviewed HRE clips as a training manifest.")
    p.add_argument("cand_dir", help="the review pool (the SRE --out folder that was reviewed)")
    p.add_argument("--out", required=True, help="manifest to write, e.g. hre.jsonl")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--reviewer", help="export this reviewer's kept clips")
    who.add_argument("--require-agreement", action="store_true",
                     help="export clips that every reviewer (or --reviewers) kept")
    p.add_argument("--reviewers", help="A,B: the reviewers --require-agreement needs (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> int:
        out = check_out(args.out, args.overwrite, folder=False)
        try:
            if args.require_agreement:
                names = pick_reviewers(args.cand_dir, args.reviewers)
            else:
                if args.reviewers:
                    raise CliError("--reviewers goes with --require-agreement; use --reviewer ID alone")
                have = reviewers(args.cand_dir)
                if args.reviewer is None and len(have) != 1:
                    raise CliError(f"the pool has {len(have)} reviewers ({have or 'none'}): pass --reviewer ID "
                                   "or --require-agreement")
                names = pick_reviewers(args.cand_dir, args.reviewer or have[0], need=1)
            counts = export(args.cand_dir, out, names, args.require_agreement)
        except (ReviewError, ManifestError) as e:
            raise CliError(str(e)) from None
        print(json.dumps(counts))
        return 0

    return run_main(work)


if __name__ == "__main__":
    sys.exit(main())
