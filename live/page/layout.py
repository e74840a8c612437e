"""The page's components, by name: the Live tab (camera, microphone, settings, study
log, and the analysis column) and the File tab. No handlers here
(``live.page.live_handlers``, ``live.page.study_handlers``, ``live.page.file_handlers``
wire them). Gradio is imported on first use.
"""
from __future__ import annotations

import argparse

from live.contract.media import MAX_WINDOW_S
from live.page.render import NO_AUDIO, TABLE_COLUMNS, WAITING
from live.window import GATES

CONSENT_LABEL = "participant consents to storing recordings for research"
NOT_STATED = "(not stated)"  # the self-report choice that records none
# Alt+M presses the "Mark event" button (a researcher marks without reaching for the mouse)
MARK_SHORTCUT_JS = """<script>
document.addEventListener("keydown", (e) => {
  if (e.altKey && !e.ctrlKey && !e.metaKey && e.code === "KeyM") {
    const b = document.querySelector("#mark_btn");
    if (b) { e.preventDefault(); b.click(); }
  }
});
</script>"""


def live_tab(a: argparse.Namespace, plans: list[str], plan: str | None, emotions: list[str]) -> dict:
    """The Live tab's components, by name. ``plans``: the plan choices, ``plan`` the
    served one; ``emotions``: the self-report's choices."""
    import gradio as gr

    c = {}
    with gr.Row():
        with gr.Column(scale=1):
            _inputs(c, a, plans, plan)
            _study_log(c, a, emotions)
        # researcher-only parts start hidden with --participant-view; on_view sets them per page
        with gr.Column(scale=2, visible=not a.participant_view) as analysis:
            c["analysis"] = analysis
            _analysis(c)
    return c


def _inputs(c: dict, a: argparse.Namespace, plans: list[str], plan: str | None) -> None:
    import gradio as gr

    c["recording"] = gr.Markdown(elem_id="recording")
    c["cam"] = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam",
                        elem_id="webcam")
    # filepath: the handler reads each chunk and deletes it (numpy would leave the file)
    c["mic"] = gr.Audio(sources=["microphone"], streaming=True, type="filepath", format=None,
                        label="Microphone", elem_id="mic")
    with gr.Row():
        c["start"] = gr.Button("Start / restart", variant="primary")
        c["stop"] = gr.Button("Stop", elem_id="stop")
    with gr.Accordion("Settings (apply on start / restart)", open=False, visible=not a.participant_view) as acc:
        c["settings"] = acc
        c["win"] = gr.Slider(1, MAX_WINDOW_S, a.window, step=0.5, label="window (s)")
        c["hop"] = gr.Slider(0.5, 8, a.hop, step=0.5, label="hop (s)")
        c["gate"] = gr.Radio(list(GATES), value=a.gate, label="analyse windows")
        c["plan"] = gr.Dropdown(plans, value=plan or "none", label="plan")
        c["reload"] = gr.Button("Reload model with this plan")


def _study_log(c: dict, a: argparse.Namespace, emotions: list[str]) -> None:
    import gradio as gr

    with gr.Accordion("Study log (opt-in)", open=bool(a.log_session)):
        c["who"] = gr.Textbox(a.participant or "", label="participant id")
        c["sid"] = gr.Textbox(a.log_session or "", label="session id")
        c["consent"] = gr.Checkbox(a.consent, label=CONSENT_LABEL, elem_id="consent")
        c["keep"] = gr.Checkbox(a.keep_media, label="also store raw frames + audio "
                                "(needs the consent above)", elem_id="keep_media")
        # the DFEW classes keep labels consistent for curation; any other word may be typed
        c["self_report"] = gr.Dropdown([NOT_STATED, *emotions], value=NOT_STATED,
                                       allow_custom_value=True, elem_id="self_report",
                                       label="participant's own emotion now (pick, or type another)")
        c["log_on"] = gr.Checkbox(False, label=f"log this session to {a.log_dir}/<session>.jsonl",
                                  elem_id="log_on")
        c["csv_btn"] = gr.Button("Export session CSV")
        c["csv_file"] = gr.File(label="session CSV", elem_id="csv_file")


def _analysis(c: dict) -> None:
    import gradio as gr

    with gr.Row():
        c["mark_event"] = gr.Textbox(label="event", elem_id="mark_event", scale=2,
                                     placeholder="e.g. stimulus_1 (Enter, or Alt+M marks it)")
        c["mark_condition"] = gr.Textbox(label="condition (optional)", elem_id="mark_condition",
                                         scale=1)
        c["mark_btn"] = gr.Button("Mark event", elem_id="mark_btn", scale=1)
    c["mark_status"] = gr.Markdown(elem_id="mark_status")
    # inline HTML, not gr.Image: Gradio would write every frame shown to a file
    c["faces"] = gr.HTML(elem_id="faces", label="Faces")
    c["speech"] = gr.Markdown(NO_AUDIO, elem_id="speech")
    c["label"] = gr.Markdown(WAITING, elem_id="label")
    c["expl"] = gr.Textbox(label="Explanation", lines=4, interactive=False, elem_id="explanation")
    c["timeline"] = gr.Plot(label="Timeline", elem_id="timeline")
    c["stats"] = gr.Markdown(elem_id="stats")
    with gr.Accordion("All sessions, live (every open page, participants' too)", open=False):
        c["overview"] = gr.Markdown(elem_id="overview")


def file_tab(a: argparse.Namespace) -> dict:
    """The File tab's components, by name; ``outputs`` in ``live.page.render.file_outputs`` order."""
    import gradio as gr

    # no value=a.video: Gradio would copy the operator's file into its temp folder
    video = gr.File(label=f"Video file (at most {a.max_upload_mb} MB; deleted from the server once "
                    "analysed)", file_types=["video"], type="filepath", elem_id="video")
    go = gr.Button("Analyse", variant="primary")
    status = gr.Markdown(elem_id="file_status")
    table = gr.Dataframe(headers=TABLE_COLUMNS, elem_id="table", wrap=True)
    plot = gr.Plot(label="Timeline", elem_id="file_timeline")
    with gr.Row():
        jsonl, csv_file = gr.File(label="JSONL"), gr.File(label="CSV")
    return {"video": video, "go": go, "outputs": [status, table, plot, jsonl, csv_file]}
