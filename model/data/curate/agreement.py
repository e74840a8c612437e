"""Agreement between two HRE reviewers of one pool.

    python -m model.data.curate agreement CAND_DIR [--reviewers A,B]

Over the clips both reviewed, Cohen's kappa on keep (accept or edit) vs reject (null
when both gave one and the same answer throughout); over the clips both kept, the mean
Jaccard overlap of their label sets (``model.net.answers.normalize_label``). Without
``--reviewers`` the pool must hold exactly two decision logs. Prints a Markdown
summary, then the report as one JSON line. Formulas: docs/curation.md "Agreement".
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from live.contract.cli import CliError, run_main
from model.net.answers import normalize_label
from model.data.curate.review_pool import DECISIONS, KEEP, ReviewError, load_candidates, pick_reviewers, read_decisions


def cohen_kappa(pairs: list[tuple[bool, bool]]) -> tuple[float | None, float, float]:
    """(kappa or None, p_o, p_e) for two raters' binary answers on the same items."""
    n = len(pairs)
    if n == 0:
        return None, 0.0, 0.0
    p_o = sum(a == b for a, b in pairs) / n
    pa = sum(a for a, _ in pairs) / n
    pb = sum(b for _, b in pairs) / n
    p_e = pa * pb + (1 - pa) * (1 - pb)
    kappa = None if p_e >= 1.0 else (p_o - p_e) / (1 - p_e)
    return kappa, p_o, p_e


def jaccard(a: list[str], b: list[str]) -> float:
    sa = {normalize_label(x) for x in a} - {""}
    sb = {normalize_label(x) for x in b} - {""}
    union = sa | sb
    return 1.0 if not union else len(sa & sb) / len(union)


def agreement(cand_dir: str | Path, a: str, b: str) -> dict:
    """The report of reviewers ``a`` and ``b`` on pool ``cand_dir`` (module docstring)."""
    da, db = read_decisions(cand_dir, a), read_decisions(cand_dir, b)
    n_cand = len(load_candidates(cand_dir))
    both = sorted(set(da) & set(db))
    pairs = [(da[i]["decision"] in KEEP, db[i]["decision"] in KEEP) for i in both]
    kappa, p_o, p_e = cohen_kappa(pairs)
    kept = [i for i, (ka, kb) in zip(both, pairs) if ka and kb]
    overlaps = [jaccard(da[i]["labels"] or [], db[i]["labels"] or []) for i in kept]
    table = {"keep_keep": sum(x and y for x, y in pairs), "keep_reject": sum(x and not y for x, y in pairs),
             "reject_keep": sum(y and not x for x, y in pairs), "reject_reject": sum(not x and not y for x, y in pairs)}
    r = lambda v: None if v is None else round(v, 4)  # noqa: E731
    return {
        "reviewers": [a, b], "candidates": n_cand, "both_reviewed": len(both), "table": table,
        "observed_agreement": r(p_o), "expected_agreement": r(p_e), "kappa": r(kappa),
        "both_kept": len(kept), "label_jaccard_mean": r(sum(overlaps) / len(overlaps)) if overlaps else None,
        "decisions": {name: {d: sum(x["decision"] == d for x in dec.values()) for d in DECISIONS}
                      for name, dec in ((a, da), (b, db))},
    }


def markdown(rep: dict) -> str:
    a, b = rep["reviewers"]
    t = rep["table"]
    kappa = "undefined" if rep["kappa"] is None else f"{rep['kappa']:.3f}"
    jac = "n/a" if rep["label_jaccard_mean"] is None else f"{rep['label_jaccard_mean']:.3f}"
    return "\n".join([
        f"**{a}** vs **{b}**: {rep['both_reviewed']} of {rep['candidates']} clips reviewed by both",
        "",
        f"| {a} \\ {b} | keep | reject |", "|---|---|---|",
        f"| keep | {t['keep_keep']} | {t['keep_reject']} |",
        f"| reject | {t['reject_keep']} | {t['reject_reject']} |",
        "",
        f"Cohen's kappa (keep vs reject): {kappa} (observed {rep['observed_agreement']}, "
        f"expected {rep['expected_agreement']}); label overlap (mean Jaccard, {rep['both_kept']} "
        f"clips both kept): {jac}",
    ])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model.data.curate agreement",
                                description="Cohen's kappa and label overlap of two HRE reviewers.")
    p.add_argument("cand_dir", help="the review pool (the SRE --out folder that was reviewed)")
    p.add_argument("--reviewers", help="A,B (default: the pool's two reviewers)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> int:
        try:
            names = pick_reviewers(args.cand_dir, args.reviewers)
            if len(names) != 2:
                raise CliError(f"agreement compares two reviewers; {len(names)} found ({names}): "
                               "pass --reviewers A,B")
            rep = agreement(args.cand_dir, *names)
        except ReviewError as e:
            raise CliError(str(e)) from None
        print(markdown(rep))
        print(json.dumps(rep))
        return 0

    return run_main(work)


if __name__ == "__main__":
    sys.exit(main())
