"""Training log: one CSV row per optimizer step and a loss plot drawn from it.

    OUT/log.csv   step,loss,lr,grad_norm,seconds,epoch
    OUT/loss.png  loss (and its moving average) against step; lr on a second axis

`seconds` is wall time since the run (or its first segment, across resumes) began.
On resume, rows after the checkpoint's step are dropped first: a run killed after its
last checkpoint must not leave steps that the resumed run will log again.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from live.contract.appendfile import AppendFile, repair_tail
from live.contract.files import save_figure, write_whole

COLUMNS = ("step", "loss", "lr", "grad_norm", "seconds", "epoch")
SMOOTH_WINDOW = 20  # steps in the plot's moving average


@dataclass
class LogRow:
    step: int
    loss: float
    lr: float
    grad_norm: float
    seconds: float
    epoch: int


def read_log(path: str | Path) -> list[LogRow]:
    """Rows of a log.csv (empty when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: header {reader.fieldnames} is not {list(COLUMNS)}")
        return [
            LogRow(int(r["step"]), float(r["loss"]), float(r["lr"]), float(r["grad_norm"]), float(r["seconds"]), int(r["epoch"]))
            for r in reader
        ]


def _csv_line(values) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()


def _row_line(r: LogRow) -> str:
    return _csv_line([r.step, f"{r.loss:.6f}", f"{r.lr:.6e}", f"{r.grad_norm:.6f}", f"{r.seconds:.2f}", r.epoch])


class CsvLog:
    """Appends rows to `path`, each one whole and fsynced (`live.contract.appendfile.AppendFile`)
    so a crash loses nothing logged. At start the file is rewritten whole with the rows
    up to `resume_step` (a torn last row, from a kill mid-write, kept aside first). The
    caller holds the output folder's lock (`trainer.claim_out`)."""

    def __init__(self, path: str | Path, resume_step: int = 0):
        self.path = Path(path)
        repair_tail(self.path)
        kept = [r for r in read_log(self.path) if r.step <= resume_step] if resume_step else []
        self.offset_seconds = kept[-1].seconds if kept else 0.0
        with write_whole(self.path, "w", encoding="utf-8", private=True) as f:
            f.write(_csv_line(COLUMNS) + "".join(_row_line(r) for r in kept))
        self._file = AppendFile(self.path, lock=False)

    def append(self, row: LogRow) -> None:
        self._file.append(_row_line(row))

    def close(self) -> None:
        self._file.close()


def plot_loss(log_path: str | Path, png_path: str | Path) -> Path | None:
    """Draw loss.png from log.csv; None when there is nothing to plot yet."""
    rows = read_log(log_path)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    steps = [r.step for r in rows]
    losses = [r.loss for r in rows]
    smooth = []
    for i in range(len(losses)):
        window = losses[max(0, i - SMOOTH_WINDOW + 1) : i + 1]
        smooth.append(sum(window) / len(window))
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, losses, color="tab:blue", alpha=0.35, lw=1, label="loss")
    ax.plot(steps, smooth, color="tab:blue", lw=2, label=f"loss (mean of {SMOOTH_WINDOW})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(steps, [r.lr for r in rows], color="tab:orange", lw=1, label="lr")
    ax2.set_ylabel("learning rate", color="tab:orange")
    ax.legend(loc="upper right")
    fig.tight_layout()
    png_path = save_figure(fig, png_path)
    plt.close(fig)
    return png_path
