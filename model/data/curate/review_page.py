"""The HRE review page: a person plays each candidate clip, reads its cues, explanation
and labels, and accepts, edits or rejects it.

    python -m model.data.curate review CAND_DIR --reviewer ID [--port 7861]

CAND_DIR is a review pool (``model.data.curate.review_pool``); decisions go to
``CAND_DIR/reviews/<ID>.jsonl``, fsynced before the next clip shows. Keys, resuming,
two tabs, local-only serving and ``--port 0``: docs/curation.md "The review page".
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from pathlib import Path

from live.contract.cli import CliError, run_main
from model.data.curate.review_pool import Candidate, ReviewError, ReviewLog, load_candidates, parse_labels
from model.net.templates import reasoning_answer

HOST = "127.0.0.1"
DEFAULT_PORT = 7861  # app.py serves on 7860
# The page stays on this machine: no usage analytics or version check sent to
# gradio.app, no Hugging Face Hub look-up or telemetry. Set before gradio is imported
# (it reads some at import) and forced, whatever the shell says.
LOCAL_ONLY_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                  "DO_NOT_TRACK": "1"}
# System fonts: Gradio's default theme makes the browser fetch fonts from Google.
LOCAL_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
LOCAL_MONO_FONTS = ["ui-monospace", "monospace"]

# Global key handler (Gradio 6: launch(head=...)); buttons are found by elem_id.
KEYS_JS = """
<script>
document.addEventListener("keydown", (ev) => {
  const t = ev.target;
  const typing = t && (t.tagName === "TEXTAREA" || t.tagName === "INPUT" || t.isContentEditable);
  const click = (id) => {
    const b = document.getElementById(id);
    if (b && !b.disabled) { ev.preventDefault(); b.click(); }
  };
  if ((ev.ctrlKey || ev.metaKey) && ev.key === "Enter") { click("review-edit"); return; }
  if (typing || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.key === "a") click("review-accept");
  else if (ev.key === "r") click("review-reject");
  else if (ev.key === "e") {
    const x = document.querySelector("#review-explanation textarea");
    if (x) { ev.preventDefault(); x.focus(); }
  }
});
</script>
"""


class Reviewer:
    """The page's logic, without Gradio: the pool, the log, what to show next."""

    def __init__(self, cand_dir: str | Path, reviewer: str) -> None:
        self.candidates = load_candidates(cand_dir)
        self.by_id = {c.id: c for c in self.candidates}
        self.log = ReviewLog(cand_dir, reviewer)
        self._answered: set[str] = set()  # showings already decided (see `decide`)
        self._mutex = threading.Lock()

    def next(self) -> Candidate | None:
        done = self.log.reviewed()
        return next((c for c in self.candidates if c.id not in done), None)

    @staticmethod
    def showing(c: Candidate | None) -> dict | None:
        """What a tab holds while it shows clip ``c``: its id and a token of this one
        showing, so `decide` tells a second key press in the same tab (same token) from
        another tab's decision on the same clip (another token)."""
        return None if c is None else {"id": c.id, "shown": uuid.uuid4().hex}

    def progress(self) -> tuple[int, int]:
        ids = set(self.by_id)
        return len(self.log.reviewed() & ids), len(ids)

    def decide(self, shown: dict | None, decision: str, explanation: str = "", labels_text: str = "") -> dict | None:
        """Record a decision on the clip a tab shows (``shown``: `showing`'s value); None
        (nothing recorded) when no clip is shown or this showing is already decided (a
        second key press before the next clip arrived). Another tab's decision on the
        same clip is recorded too: the last decision is the one kept (`read_decisions`).
        "edit": the text boxes, checked (ReviewError when unusable); an edit that
        changes nothing is an accept."""
        cand = self.by_id.get(str((shown or {}).get("id", "")))
        token = str((shown or {}).get("shown", ""))
        if cand is None or not token:
            return None
        with self._mutex:
            if token in self._answered:
                return None
            rec = self._record(cand, decision, explanation, labels_text)
            self._answered.add(token)
            return rec

    def _record(self, cand: Candidate, decision: str, explanation: str, labels_text: str) -> dict:
        if decision == "reject":
            return self.log.add(cand.id, "reject")
        if decision == "edit":
            expl, labels = " ".join((explanation or "").split()), parse_labels(labels_text)
            if not expl or not labels:
                raise ReviewError("an edit needs an explanation and at least one label")
            try:
                reasoning_answer(expl, labels)
            except ValueError as e:
                raise ReviewError(str(e)) from None
            if expl != " ".join(cand.explanation.split()) or labels != parse_labels(", ".join(cand.labels)):
                return self.log.add(cand.id, "edit", expl, labels)
        return self.log.add(cand.id, "accept", cand.explanation, cand.labels)


def _showing(text) -> dict | None:
    """The hidden box's text back to `Reviewer.showing`'s value (None when empty or not
    ours: nothing is decided then)."""
    try:
        value = json.loads(text) if isinstance(text, str) and text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def cues_markdown(c: Candidate) -> str:
    rows = [f"**clip** `{c.id}` · source `{c.source or '-'}` · gold label `{c.source_label or '-'}`"
            + (f" · self-review score {c.score}" if c.score is not None else "")]
    names = {"scene": "Scene", "face": "Face", "transcript": "Transcript", "language": "Language",
             "audio_caption": "Audio"}
    for key, title in names.items():
        v = c.cues.get(key)
        rows.append(f"**{title}:** {v if v not in (None, '') else '—'}")
    return "\n\n".join(rows)


def build_page(rev: Reviewer):
    """The Gradio Blocks of the page (launch it with ``head=KEYS_JS``)."""
    import gradio as gr

    def show():
        c = rev.next()
        done, total = rev.progress()
        prog = f"**{done}/{total} reviewed** by `{rev.log.reviewer}`"
        if c is None:
            return ("", None, f"{prog}. All clips are reviewed: close the page.", "", "", "")
        return (json.dumps(rev.showing(c)), str(c.video) if c.video else None, f"{prog} · keys: a accept, e edit, "
                f"Ctrl+Enter save edit, r reject", cues_markdown(c), c.explanation, ", ".join(c.labels))

    def on(decision):
        def handler(shown, expl, labels):
            try:
                rev.decide(_showing(shown), decision, expl, labels)
            except ReviewError as e:
                gr.Warning(str(e))
                return (gr.update(),) * 6
            return show()
        return handler

    with gr.Blocks(title="Omni-Emotion HRE review", analytics_enabled=False) as page:
        # What this tab shows, kept in the browser (a hidden box, not server-side State):
        # an event carries the value the tab had when the key was pressed, so a second
        # press before the next clip arrives names the clip already decided.
        cur = gr.Textbox(visible=False, elem_id="review-shown")
        progress = gr.Markdown(elem_id="review-progress")
        with gr.Row():
            with gr.Column(scale=3):
                video = gr.Video(label="clip", interactive=False, autoplay=True, elem_id="review-video")
            with gr.Column(scale=4):
                cues = gr.Markdown(elem_id="review-cues")
        expl = gr.Textbox(label="explanation", lines=5, elem_id="review-explanation")
        labels = gr.Textbox(label="open-vocabulary labels (comma separated)", elem_id="review-labels")
        with gr.Row():
            accept = gr.Button("Accept (a)", variant="primary", elem_id="review-accept")
            edit = gr.Button("Save edit (Ctrl+Enter)", elem_id="review-edit")
            reject = gr.Button("Reject (r)", variant="stop", elem_id="review-reject")
        outs = [cur, video, progress, cues, expl, labels]
        for btn, decision in ((accept, "accept"), (edit, "edit"), (reject, "reject")):
            btn.click(on(decision), [cur, expl, labels], outs, concurrency_limit=1)
        page.load(show, None, outs)
    return page


def serve(rev: Reviewer, port: int) -> None:
    """Serve the page on 127.0.0.1 until Ctrl-C or SIGTERM: local-only (`LOCAL_ONLY_ENV`,
    no share link, system fonts), serving the candidates' clips alone (each clip file is
    allowed, not the folders they are in), Gradio's copies in a folder of its own that
    is removed at the end."""
    os.environ.update(LOCAL_ONLY_ENV)
    # Gradio copies each clip it serves into its temp folder: this process's own
    # (0700), removed when the page stops (Ctrl-C or SIGTERM), so no copy outlives it.
    temp = tempfile.mkdtemp(prefix="omni-review-")
    os.environ["GRADIO_TEMP_DIR"] = temp
    signal.signal(signal.SIGTERM, _stop)
    try:
        _launch(rev, port)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt  # unwinds through `serve`'s cleanup


def _launch(rev: Reviewer, port: int) -> None:
    import gradio as gr

    clips = sorted({str(c.video) for c in rev.candidates if c.video is not None})
    page = build_page(rev)
    done, total = rev.progress()
    print(f"{done}/{total} clips already reviewed by {rev.log.reviewer}; decisions go to {rev.log.path}",
          file=sys.stderr)
    page.queue()
    theme = gr.themes.Default(font=LOCAL_FONTS, font_mono=LOCAL_MONO_FONTS)
    _, url, _ = page.launch(server_name=HOST, server_port=port or None, head=KEYS_JS, theme=theme,
                            allowed_paths=clips, share=False, enable_monitoring=False,
                            prevent_thread_lock=True, quiet=True)
    print(f"review page: {url}", flush=True)
    try:
        page.block_thread()
    finally:
        page.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m model.data.curate review",
                                description="Review HRE candidates in the browser (127.0.0.1 only).")
    p.add_argument("cand_dir", help="the review pool (the SRE --out folder to review)")
    p.add_argument("--reviewer", required=True, help="your reviewer id (letters, digits, _ - .)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: a free one)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> int:
        try:
            rev = Reviewer(args.cand_dir, args.reviewer)
        except ReviewError as e:
            raise CliError(str(e)) from None
        if not rev.candidates:
            raise CliError(f"{args.cand_dir}: sre.jsonl has no candidates to review")
        try:
            serve(rev, args.port)
        finally:
            rev.log.close()
        return 0

    return run_main(work)


if __name__ == "__main__":
    sys.exit(main())
