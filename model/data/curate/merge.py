"""``python -m model.data.curate merge DIR1 DIR2 ... --out DIR``: combine shard folders.

Every record file is concatenated, sorted by id (so the result does not depend on the
order clips finished in). A clip finished (kept or rejected) in one folder drops its
failure records elsewhere; a clip finished in two folders (shards run with different
``--shard`` specs) is an error. stats.json and scores.png are made for the whole.

The input folders are only read, never changed (docs/curation.md).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from live.contract.appendfile import lock_holder
from live.contract.cli import CliError, check_out, run_main

from . import records as R


def merge(dirs: Sequence[Path], out: Path) -> dict:
    """Merge ``dirs`` into ``out``; returns the summary line's object."""
    rows: dict[str, list[dict]] = {name: [] for name in R.RECORD_FILES}
    threshold = None
    for d in dirs:
        # read-only: a torn last line is ignored, orphans are dropped in memory
        mine = R.settle({name: R.read_records(d / name, torn_ok=True) for name in R.RECORD_FILES}, set())
        for name in R.RECORD_FILES:
            rows[name] += mine[name]
        run = d / R.RUN
        if run.is_file():
            threshold = json.loads(run.read_text(encoding="utf-8")).get("threshold", threshold)
    done: dict[str, str] = {}
    for name in (R.SRE, R.REJECTED):
        for r in rows[name]:
            if r["id"] in done:
                raise CliError(f"clip {r['id']!r} is finished in more than one folder; "
                               "were the shards run with different --shard specs?")
            done[r["id"]] = name
    failed = {r["id"]: r for r in rows[R.FAILED] if r["id"] not in done}  # the last failure wins
    outcome = set(done) | set(failed)
    clues = {r["id"]: r for r in rows[R.CLUES] if r["id"] in outcome}
    out.mkdir(parents=True, exist_ok=True)
    for name, recs in ((R.SRE, rows[R.SRE]), (R.REJECTED, rows[R.REJECTED]),
                       (R.FAILED, list(failed.values())), (R.CLUES, list(clues.values()))):
        R.rewrite(out / name, sorted(recs, key=lambda r: r["id"]))
    return R.finish(out, 0.0, threshold)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.data.curate merge", description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="+", help="output folders of sre runs (one per shard)")
    p.add_argument("--out", required=True, help="merged folder (new or empty)")
    args = p.parse_args(argv)

    def work() -> int:
        dirs = [Path(d) for d in args.dirs]
        for d in dirs:
            if not (d / R.RUN).is_file():
                raise CliError(f"{d} is not a curation output folder (no {R.RUN})")
            owner = lock_holder(d)
            if owner is not None:
                raise CliError(f"{d} is still being written by a running curation ({owner}); "
                               "merge it when that run has finished")
        out = check_out(args.out)
        if any(out.resolve() == d.resolve() for d in dirs):
            raise CliError("--out must differ from the folders merged")
        print(json.dumps(merge(dirs, out)))
        return 0

    return run_main(work)


if __name__ == "__main__":
    sys.exit(main())
