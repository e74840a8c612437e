"""``python -m model.data.curate SUBCOMMAND ...``: one entry point, one module per
subcommand (each has ``main(argv) -> int``). Add a subcommand by adding a line here."""
from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from live.contract.cli import EXIT_USAGE

SUBCOMMANDS = {  # name → module (relative to this package), loaded on use
    "sre": ".sre",
    "merge": ".merge",
    "hre-select": ".selection",  # HRE: N clips per source, disjoint from SRE
    "review": ".review_page",  # HRE: the review page
    "agreement": ".agreement",  # HRE: kappa + label overlap of two reviewers
    "export": ".export",  # HRE: reviewed clips → hre.jsonl
    "study": ".study",  # consented study recordings → labelled manifest
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = ", ".join(SUBCOMMANDS)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m model.data.curate {{{names}}} ...\n"
              f"Emotion data curation (paper §3); each subcommand has its own --help.",
              file=sys.stderr if not argv else sys.stdout)
        return EXIT_USAGE if not argv else 0
    if argv[0] not in SUBCOMMANDS:
        print(f"error: unknown subcommand {argv[0]!r}; choose one of {names}", file=sys.stderr)
        return EXIT_USAGE
    module = importlib.import_module(SUBCOMMANDS[argv[0]], __package__)
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
