"""The Live tab's timer tick (``refresh``): a page session's view drawn into the page's
outputs (``live.page.render``), each output sent only when it changed since the last
tick (``PageView.sent``). Gradio is imported on first use.
"""
from __future__ import annotations

from live.page.render import (draw_faces, image_html, label_markdown, model_banner, speech_markdown,
                              stats_markdown, streaming_label_markdown, timeline_figure)
from live.page.session import PageSession
from model.net.answers import labels_complete, parse_answer

REFRESH_S = 0.5  # s between page refreshes of the live outputs


def refresh(session: PageSession):
    """Timer tick → (banner, faces, speech, label, explanation, timeline, stats);
    an unchanged output is skipped (nothing is sent for it)."""
    import gradio as gr

    run, v, sent = session.runner, session.view, session.view.sent

    def changed(key, value) -> bool:
        if sent.get(key) == value:
            return False
        sent[key] = value
        return True

    def unless_same(key, value):
        return value if changed(key, value) else gr.skip()

    banner = "\n\n".join([model_banner(run.holder), session.study.banner(),
                           *[f"⚠️ {w}" for w in session.warnings()]])
    if v.participant_view:  # a participant is sent no labels, faces or stats (they would bias)
        return (unless_same("banner", banner), *[gr.skip()] * 6)
    faces = gr.skip()
    if v.frame is not None and changed("frame", v.frame_no):
        faces = image_html(draw_faces(v.frame.rgb(), v.faces))  # inline: no file of the face
    r = v.latest
    label, text = label_markdown(r), (r or {}).get("explanation", "")
    flight, partial = v.in_flight, v.partial  # read once: the analyser thread moves both
    if flight is not None and partial:
        text = partial
        if labels_complete(partial):  # the label the moment its list closes in the stream
            parsed = parse_answer(partial)
            label, text = streaming_label_markdown(parsed.label, parsed.labels, flight[1]), parsed.explanation
    markers = session.study.markers.markers()
    timeline = (timeline_figure(v.records, markers=markers)
                if changed("timeline", (len(v.records), len(markers))) else gr.skip())
    speech = speech_markdown(run.engine, stopped=run.paused and not run.running)
    return (unless_same("banner", banner), faces, unless_same("speech", speech),
            unless_same("label", label), unless_same("explanation", text), timeline,
            unless_same("stats", stats_markdown(v.stats(run))))
