"""Writing a file whole: the one rule for every file a reader may see while it is
being written (study media and CSVs, analysis exports, curation records and stats,
results and benchmark JSON, plots, downloaded face models). A reader sees the old
file or the whole new one, never a part.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path

PART_SUFFIX = ".part"  # temporary files end so (and carry the writer's pid and thread)
PRIVATE_MODE = 0o600  # owner read/write only (the same as live.contract.appendfile.FILE_MODE)


@contextlib.contextmanager
def write_whole(out: str | Path, mode: str = "w", private: bool = False, **kw):
    """Open a temporary ``out.<pid>-<thread>.part`` for writing; on success flush,
    fsync it and rename it to ``out``; on error remove it. The temporary name is the
    writer's own, so two processes or threads writing the same file never share one.
    ``private``: the file is owner-only (0600) from its first byte (study data)."""
    out = Path(out)
    tmp = out.with_name(f"{out.name}.{os.getpid()}-{threading.get_ident()}{PART_SUFFIX}")
    try:
        if private:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_MODE))
        with open(tmp, mode, **kw) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_figure(fig, path: str | Path, **kw) -> Path:
    """A matplotlib figure written whole to ``path`` (format from its suffix; ``kw`` to
    ``savefig``, e.g. ``dpi``)."""
    path = Path(path)
    with write_whole(path, "wb") as f:
        fig.savefig(f, format=path.suffix.lstrip(".") or "png", **kw)
    return path


def write_json(path: str | Path, obj, **kw) -> Path:
    """``obj`` as indented JSON (one level, trailing newline) written whole to ``path``;
    ``kw`` to ``json.dumps`` (e.g. ``default=float``, ``ensure_ascii=False``)."""
    path = Path(path)
    with write_whole(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=1, **kw) + "\n")
    return path
