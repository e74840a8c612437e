"""``python -m live.study report OUT``: ``windows.csv``, ``summary.csv`` and a
self-contained ``report.html`` (matplotlib images embedded as base64 PNG data URIs:
the page needs no other file and no network).

The page: the counts of windows analysed / gated / failed and of recordings failed,
a condition x label heat map (share of each condition's time, all participants), and
one timeline per participant (one panel per recording: labels over time, events as
vertical lines, speech ratio and face presence underneath).
"""
from __future__ import annotations

import base64
import html
import io
import os
from collections import defaultdict
from pathlib import Path

from live.contract.files import PRIVATE_MODE, write_whole
from live.study_log import write_csv

from . import REPORT_HTML, SUMMARY_CSV, WINDOWS_CSV
from .tables import (SUMMARY_COLUMNS, WINDOW_COLUMNS, read_failures, read_study,
                     summary_rows, window_counts, window_rows)

DPI = 80  # px per inch of the embedded figures
TIMELINE_W = 9.0  # in, width of a participant's timeline
PANEL_H = 1.9  # in, height of one recording's panel
NO_LABEL_NAME = "(no label)"
NO_CONDITION_NAME = "(none)"
EVENT_COLOUR = "tab:red"


def write_report(out: str | Path) -> dict:
    """Write the three files into ``out``; returns their paths and the counts."""
    out = Path(out)
    records, markers = read_study(out)
    failures = read_failures(out)
    rows = window_rows(records)
    summary = summary_rows(rows)
    paths = {"windows_csv": write_csv(rows, out / WINDOWS_CSV, WINDOW_COLUMNS),
             "summary_csv": write_csv(summary, out / SUMMARY_CSV, SUMMARY_COLUMNS)}
    for p in paths.values():
        os.chmod(p, PRIVATE_MODE)  # participant data: owner-only, as the logs
    counts = window_counts(records, len(failures))
    page = render_page(rows, summary, markers, counts, failures, title=f"Study report: {out.name}")
    with write_whole(out / REPORT_HTML, "w", private=True, encoding="utf-8") as f:
        f.write(page)
    paths["report_html"] = out / REPORT_HTML
    return {**{k: str(v) for k, v in paths.items()}, **counts}


def figure_uri(fig) -> str:
    """A matplotlib Figure as a ``data:image/png;base64,...`` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def heatmap_figure(summary: list[dict]):
    """Condition x label: share of each condition's seconds (all participants pooled)."""
    from matplotlib.figure import Figure

    secs: dict[tuple[str, str], float] = defaultdict(float)
    for r in summary:
        secs[(r["condition"] or NO_CONDITION_NAME, r["label"] or NO_LABEL_NAME)] += r["seconds"]
    conds = sorted({c for c, _ in secs})
    labels = sorted({lab for _, lab in secs})
    fig = Figure(figsize=(max(4.0, 1.0 + 0.8 * len(labels)), max(2.0, 1.2 + 0.5 * len(conds))))
    ax = fig.add_subplot()
    if not secs:
        ax.set_title("no windows yet")
        return fig
    totals = {c: sum(v for (cc, _), v in secs.items() if cc == c) or 1.0 for c in conds}
    grid = [[secs.get((c, lab), 0.0) / totals[c] for lab in labels] for c in conds]
    im = ax.imshow(grid, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(conds)), conds)
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w" if v < 0.6 else "k", fontsize=8)
    ax.set_xlabel("label")
    ax.set_ylabel("condition")
    ax.set_title("share of each condition's time per label")
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    return fig


def label_colours(rows: list[dict]) -> dict[str, str]:
    """One colour per label for the whole study (every timeline alike); no label: grey."""
    labels = sorted({r["label"] for r in rows if r["label"]})
    return {**{lab: f"C{i % 10}" for i, lab in enumerate(labels)}, NO_LABEL_NAME: "0.8"}


def timeline_figure(rows: list[dict], markers: list[dict], colours: dict[str, str]):
    """One participant's recordings: per recording a labels panel and a speech ratio /
    face presence panel under it (x = media s); events as dashed lines on both."""
    from matplotlib.figure import Figure

    panels = list(dict.fromkeys((r["session"], r["run"]) for r in rows))  # a recording, or a live run
    labels = sorted({r["label"] or NO_LABEL_NAME for r in rows})
    fig = Figure(figsize=(TIMELINE_W, PANEL_H * len(panels) + 0.4))
    gs = fig.add_gridspec(2 * len(panels), 1, height_ratios=[3, 1] * len(panels), hspace=0.15)
    for k, (session, run) in enumerate(panels):
        mine = [r for r in rows if (r["session"], r["run"]) == (session, run)]
        top, bottom = fig.add_subplot(gs[2 * k]), fig.add_subplot(gs[2 * k + 1])
        for r in mine:  # each window holds its label for the hop it adds, up to its end
            y = labels.index(r["label"] or NO_LABEL_NAME)
            top.broken_barh([(r["end"] - r["seconds"], r["seconds"])], (y - 0.35, 0.7),
                            color=colours[r["label"] or NO_LABEL_NAME])
        top.set_yticks(range(len(labels)), labels, fontsize=8)
        top.set_ylim(-0.6, len(labels) - 0.4)
        top.set_title(f"{session} ({mine[0]['recording']}{'' if run is None else f', run {run}'})",
                      fontsize=9, loc="left")
        ends = [r["end"] for r in mine]
        xs = [r["end"] - r["seconds"] for r in mine] + [ends[-1]]  # each value over the span it holds
        for key, colour in (("speech_ratio", "tab:blue"), ("face_present", "tab:green")):
            ys = [float(r[key] or 0.0) for r in mine]
            bottom.step(xs, ys + ys[-1:], where="post", color=colour, lw=1,
                        label="speech ratio" if key == "speech_ratio" else "face present")
        bottom.set_ylim(-0.1, 1.2)
        bottom.set_yticks([0, 1])
        bottom.legend(loc="lower left", bbox_to_anchor=(1.0, 0.0), fontsize=7, frameon=False)
        for ax in (top, bottom):
            for t, name in _event_times(session, run, mine, markers):
                ax.axvline(t, color=EVENT_COLOUR, lw=1, ls="--")
                if ax is top:
                    ax.text(t, len(labels) - 0.5, f" {name}", color=EVENT_COLOUR, fontsize=7, va="top")
            ax.set_xlim(0, max(ends) if ends else 1)
        top.tick_params(labelbottom=False)
    bottom.set_xlabel("media time (s)")
    fig.subplots_adjust(left=0.14, right=0.86, top=1 - 0.3 / fig.get_figheight(),
                        bottom=0.45 / fig.get_figheight())
    return fig


def _event_times(session: str, run, rows: list[dict], markers: list[dict]) -> list[tuple[float, str]]:
    """Where events start in a recording (or a live run): its marker records' media
    times, or (logs without markers) where the windows' ``event`` changes."""
    mine = [(m.get("media_time"), m.get("event") or "") for m in markers
            if (m.get("session"), m.get("run")) == (session, run) and m.get("media_time") is not None]
    if mine:
        return mine
    out, last = [], None
    for r in sorted(rows, key=lambda r: r["start"]):
        if r["event"] != last and r["event"] is not None:
            out.append((r["start"], r["event"]))
        last = r["event"]
    return out


def render_page(rows: list[dict], summary: list[dict], markers: list[dict], counts: dict,
                failures: list[dict], title: str) -> str:
    """The whole HTML page (figures inline)."""
    esc = html.escape
    by_participant: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_participant[r["participant"] or ""].append(r)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;margin:1.5em;max-width:1000px}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
             "img{max-width:100%;display:block;margin:0.5em 0}</style></head><body>",
             f"<h1>{esc(title)}</h1>", "<h2>Counts</h2><table id='counts'>",
             *(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in counts.items()), "</table>"]
    if failures:
        parts.append("<h3>Recordings that could not be analysed</h3><ul>")
        parts += [f"<li>{esc(str(f.get('recording')))}: {esc(str(f.get('error')))}</li>" for f in failures]
        parts.append("</ul>")
    parts += ["<h2>Condition × label</h2>",
              f"<img id='heatmap' alt='condition x label heat map' src='{figure_uri(heatmap_figure(summary))}'>",
              "<h2>Timelines</h2>"]
    colours = label_colours(rows)
    for p, mine in sorted(by_participant.items()):
        uri = figure_uri(timeline_figure(mine, markers, colours))
        parts.append(f"<h3>{esc(p)}</h3><img class='timeline' alt='timeline of {esc(p)}' src='{uri}'>")
    parts.append(f"<p>Tables: {WINDOWS_CSV}, {SUMMARY_CSV} (columns: docs/study.md; "
                 f"{esc(NO_LABEL_NAME)} is an empty label there).</p></body></html>")
    return "\n".join(parts)

