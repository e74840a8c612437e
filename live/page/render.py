"""What the page draws, as plain values: face boxes on a frame, the labels-over-time
figure, the Markdown of the model banner, label, speech indicator, stats, recording
indicator and overview. No Gradio here: the page's handlers put these into components.
"""
from __future__ import annotations

import base64
import io
import numpy as np

BOX_RGB = (0, 255, 0)  # face box colour (pure green: absent from skin and test media)
TABLE_COLUMNS = ["index", "start", "end", "label", "labels", "explanation", "analysed", "analyse_s"]
WAITING = "### –\nwaiting for the first window…"
NO_AUDIO = "🎙️ microphone: no audio yet"
STOPPED = "⏹️ stopped: press Start / restart (or Record) to go on"
PREVIEW_JPEG_QUALITY = 80  # the face preview is sent inline as JPEG (no file is written)


def draw_faces(rgb: np.ndarray, faces) -> np.ndarray:
    """(H, W, 3) uint8 copy with a box and "#id" per tracked face."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(rgb)
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(14, rgb.shape[0] // 24))
    for f in faces or ():
        x0, y0, x1, y1 = (float(v) for v in f.box)
        d.rectangle([x0, y0, x1, y1], outline=BOX_RGB, width=max(2, rgb.shape[0] // 160))
        d.text((x0 + 4, max(0.0, y0 - font.size - 4)), f"#{f.track}", fill=BOX_RGB, font=font)
    return np.asarray(img)


def image_html(rgb: np.ndarray, alt: str = "newest frame with face boxes") -> str:
    """(H, W, 3) uint8 as an inline ``<img>`` (a JPEG data URL): the page shows the
    preview without Gradio writing a file of the participant's face anywhere."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=PREVIEW_JPEG_QUALITY)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="data:image/jpeg;base64,{data}" alt="{alt}" style="max-width:100%">'


MARKER_RGB = "tab:red"  # event markers: dashed vertical lines, named at the top


def timeline_figure(records: list[dict], title: str = "labels over time", markers=()):
    """Analysed windows as points: x = window end (s), y = label; ``markers``
    (``live.markers.Marker``s or their records) as dashed lines at their media time,
    each named. A matplotlib Figure."""
    from matplotlib.figure import Figure  # no pyplot: no global figure registry to leak

    pts = [(r["end"], r["label"] or "(no label)") for r in records if r.get("analysed")]
    cats = list(dict.fromkeys(lab for _, lab in pts))
    fig = Figure(figsize=(7, 2.4), dpi=90)
    ax = fig.add_subplot()
    if pts:
        ax.plot([t for t, _ in pts], [cats.index(lab) for _, lab in pts], "o-", ms=6, lw=1,
                color="tab:blue")
        ax.set_yticks(range(len(cats)), cats)
    for m in markers:
        t, event = (m["media_time"], m["event"]) if isinstance(m, dict) else (m.media_time, m.event)
        ax.axvline(t, color=MARKER_RGB, ls="--", lw=1)
        ax.annotate(event, (t, 1.0), xycoords=("data", "axes fraction"), rotation=90, va="top",
                    ha="right", fontsize=7, color=MARKER_RGB)
    ax.set_xlabel("time (s)")
    ax.set_title(title if pts else f"{title}: no analysed window yet", fontsize=10)
    if markers and not pts:  # markers alone: still show them on a time axis
        ax.set_yticks([])
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def model_banner(holder) -> str:
    """Which model serves (a ``live.page.session.ModelServer``), as one Markdown line."""
    icon = {"ready": "✅", "loading": "⏳", "failed": "❌"}[holder.state]
    if holder.state == "ready" and getattr(holder, "untrained", False):
        icon = "⚠️"  # it serves, but untrained: no tick for outputs that mean nothing
    config = getattr(getattr(getattr(holder, "analyser", None), "model", None), "config", None)
    random = getattr(config, "random_weights", False)  # a real-size random checkpoint (issue 23)
    return f"{icon} **Model**: {holder.status()}" + (
        " — ⚠️ **random weights** (a size/speed check: its labels mean nothing)" if random else "")


def label_markdown(rec: dict | None) -> str:
    """The newest window record with a result → the label box."""
    if rec is None:
        return WAITING
    if rec.get("error"):
        return f"### analysis failed\nwindow {rec['index']}: `{rec['error']}` (the session goes on)"
    if not rec["analysed"]:  # the model is still loading (or failed to load)
        return f"### –\nwindow {rec['index']}: {rec.get('pending') or rec['reason']}"
    words = ", ".join(rec["labels"]) or "–"
    late = "" if rec["latency_s"] is None else f" · result {rec['latency_s']:.1f} s after the window"
    return (f"### {rec['label'] or '(no label)'}\n*words:* {words}  \n"
            f"window {rec['index']} · {rec['start']:.1f}–{rec['end']:.1f} s{late}")


def streaming_label_markdown(label: str | None, labels: list[str], index: int) -> str:
    """The label box while window ``index`` is still generating: its labels, parsed from
    the text streamed so far (a labels-first answer closes its list within a few tokens)."""
    words = ", ".join(labels) or "–"
    return f"### {label or '(no label)'}\n*words:* {words}  \nwindow {index} · explanation still coming…"


def speech_markdown(engine, stopped: bool = False) -> str:
    """The speech indicator of a running ``live.engine.Engine`` (or None); ``stopped``:
    the tab's Stop was pressed."""
    if stopped:
        return STOPPED
    if engine is None or engine.audio.total == 0:
        return NO_AUDIO
    return "🔴 **speech**" if engine.vad.in_speech else "⚪ silence"


def stats_markdown(stats: dict) -> str:
    return "| stat | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in stats.items())


def recording_markdown(session) -> str:
    """The participant's "recording" indicator for a ``live.page.session.PageSession``: is
    its engine running, and do camera frames and microphone audio arrive."""
    if not session.runner.running:
        return "## ⚪ Not recording\nPress **Record** on the camera (and the microphone) to start."
    cam = "✅ camera" if session.view.frames_in else "❌ camera: no frames yet"
    mic = "✅ microphone" if session.view.audio_s else "❌ microphone: no audio yet"
    return f"## 🔴 RECORDING\n{cam} · {mic}"


def sessions_markdown(sessions) -> str:
    """The researcher's overview of every open tab's ``PageSession`` (participant
    views included): who, running or not, windows analysed, the newest label."""
    rows = []
    for k, s in enumerate(sessions, 1):
        v, log = s.view, s.study.log
        who = log.participant if log is not None else "–"
        latest = v.latest or {}
        done = sum(1 for r in list(v.records) if r.get("analysed"))
        label = latest.get("label") or "–"
        at = f"{latest['end']:.1f} s" if latest.get("end") is not None else "–"
        view = "participant" if v.participant_view else "researcher"
        marks = s.study.markers.markers()
        event = marks[-1].event if marks else "–"
        rows.append(f"| {k} | {who} | {view} | {'🔴 live' if s.runner.running else 'stopped'} | {done} | {label} | "
                    f"{at} | {event} |")
    if not rows:
        return "No open sessions."
    return ("| # | participant | view | state | windows analysed | newest label | at | last event |\n"
            "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))
