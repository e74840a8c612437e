"""A user study as a folder: analyse every recording, report, withdraw, export.

    python -m live.study analyse STUDY_DIR --out OUT [--participants participants.csv]
                                 [--events-dir DIR] [--resume] [analysis options of live.run]
    python -m live.study report OUT
    python -m live.study withdraw OUT --participant P [--records]
    python -m live.study export OUT --out EXPORT --pseudonymise

The analysed study folder OUT (docs/study.md "What is stored where") is a study log
folder like the app's ``--log-dir``: one ``<session>.jsonl`` study log per recording
(``live.study_log.StudyLog`` lines: the live app's record format), so ``report``,
``withdraw``, ``export`` and ``model.data.curate study`` read the app's logs and an
analysed folder alike. This module names the files of that layout (the one place).
"""
from __future__ import annotations

from pathlib import Path

from live.study_log import AUDIT_NAME as AUDIT  # live.study_log.withdraw's audit trail
from live.study_log import FAILURES_NAME as FAILURES  # noqa: F401  (used by the subcommands)
from live.study_log import session_logs as study_logs  # noqa: F401  (the one rule)

LOG_SUFFIX = ".jsonl"  # <session>.jsonl: one study log per recording / live session
STUDY_JSON = "study.json"  # what was analysed, with which options (written whole)
PARTIAL_DIR = ".partial"  # logs being written; renamed into OUT when complete
WINDOWS_CSV = "windows.csv"
SUMMARY_CSV = "summary.csv"
REPORT_HTML = "report.html"
KEY_FILE = "pseudonym.key"  # the export's HMAC key: stays in the study folder (0600)


def withdrawn(out: str | Path) -> set[str]:
    """Participants whose records were deleted on withdrawal (``audit.jsonl`` lines of
    ``live.study_log.withdraw`` with ``records``): a resumed analysis never makes
    their logs again."""
    from live.study_log import read_jsonl

    path = Path(out) / AUDIT
    if not path.is_file():
        return set()
    return {a.get("participant") for a in read_jsonl(path, allow_partial_tail=True)
            if a.get("action") == "withdraw" and a.get("records")}
