"""The Live tab's handlers: the browser's webcam frames and microphone chunks pushed into
the caller's page session, the refresh timer (``refresh``: each output sent only when it
changed, ``PageView.sent``), Start / Stop / Reload-plan, the study-log, consent and
self-report boxes (a log is owned by the caller's own browser session, never an id the
client names), the session CSV, the mark-event box, and the recording indicator and
researcher's overview. Every handler is ``live.page.guard.guard``ed; one that gets the
request notes its tab in ``Tabs`` first (closing the tab stops its engine).
"""
from __future__ import annotations

import html

from live.contract.appendfile import OutputLocked
from live.contract.cli import one_line
from live.page.guard import PRIVATE, QUIET, check_settings, check_text, guard, log, user_error, with_request
from live.page.hosting import discard_upload
from live.page.render import (draw_faces, image_html, label_markdown, model_banner, recording_markdown,
                              sessions_markdown, speech_markdown, stats_markdown, streaming_label_markdown,
                              timeline_figure)
from live.page.session import PageSession, Tabs
from live.study_log import StudyLogError, short

STREAM_EVERY_S = 0.2  # s between webcam frames / mic chunks sent by the browser (~5/s)
REFRESH_S = 0.5  # s between page refreshes of the live outputs
NOT_STATED = "(not stated)"  # the self-report choice that records none
# always_last: a click while the previous one is still being answered is sent after
# it, never dropped (Gradio's default "once" would drop it and leave the box showing
# a state the server never got)
BOX = dict(trigger_mode="always_last", **PRIVATE)


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
    flight, (partial, parsed) = v.in_flight, v.partial  # read once: the analyser thread moves both
    if flight is not None and partial:
        text = partial
        if parsed.labels_closed:  # the label the moment its list closes (the server parsed it)
            label, text = streaming_label_markdown(parsed.label, parsed.labels, flight[1]), parsed.explanation
    markers = session.study.markers.markers()
    timeline = (timeline_figure(v.records, markers=markers)
                if changed("timeline", (len(v.records), len(markers))) else gr.skip())
    speech = speech_markdown(run.engine, stopped=run.paused and not run.running)
    return (unless_same("banner", banner), faces, unless_same("speech", speech),
            unless_same("label", label), unless_same("explanation", text), timeline,
            unless_same("stats", stats_markdown(v.stats(run))))


def wire_streams(c: dict, banner, session, tabs: Tabs) -> None:
    """Frames and chunks in, the refresh timer's outputs out."""
    import gradio as gr

    def on_frame(f, s, request):
        tabs.seen(request.session_hash, s).runner.push_frame(f)

    def on_chunk(path, s, request):
        s = tabs.seen(request.session_hash, s)
        if not path:
            return
        if not isinstance(path, str):
            raise user_error(f"a microphone chunk must be an uploaded file, got {short(path)}")
        try:
            if not s.runner.paused or s.runner.running:  # after Stop the chunk is not even read
                from gradio.processing_utils import audio_from_file

                s.runner.push_audio(audio_from_file(path))
        finally:
            discard_upload(path)  # the participant's voice is not kept in Gradio's folder

    with_request(on_frame, on_chunk)
    c["cam"].stream(guard(on_frame), [c["cam"], session], [], stream_every=STREAM_EVERY_S, **QUIET)
    c["mic"].stream(guard(on_chunk), [c["mic"], session], [], stream_every=STREAM_EVERY_S, **QUIET)
    outs = [banner, c["faces"], c["speech"], c["label"], c["expl"], c["timeline"], c["stats"]]
    gr.Timer(REFRESH_S).tick(guard(refresh), [session], outs, **QUIET)


def wire_controls(c: dict, session, holder, tabs: Tabs, plans: list[str]) -> None:
    """Start / restart (with the settings), Stop, and reloading the model with a plan
    (one of ``plans``) on ``holder`` (a ``live.page.session.ModelServer``)."""
    def on_start(w, h, g, s, request):
        check_settings(w, h, g)
        run = tabs.seen(request.session_hash, s).runner
        run.window_s, run.hop_s, run.gate = w, h, g
        run.restart()

    def on_stop(s):
        s.runner.stop()

    def on_reload(plan):
        if plan not in plans:
            raise user_error(f"plan must be one of {', '.join(plans)}, got {short(plan)}")
        try:
            holder.start(plan=plan)
        except ValueError as e:  # a pool's plan is fixed at its start
            raise user_error(str(e)) from None

    with_request(on_start)
    c["start"].click(guard(on_start), [c["win"], c["hop"], c["gate"], session], [], **PRIVATE)
    c["stop"].click(guard(on_stop), [session], [], **PRIVATE)
    c["reload"].click(guard(on_reload), [c["plan"]], [], **PRIVATE)


def wire_study_log(c: dict, session, tabs: Tabs) -> None:
    """The study-log, consent and self-report boxes, and the CSV export."""
    import gradio as gr

    def on_logging(on, p, sess, km, ok, s, request):
        # the owner is the caller's own Gradio session, never an id the client names
        try:
            check_text("participant id", p, optional=True), check_text("session id", sess, optional=True)
            tabs.seen(request.session_hash, s).study.set_logging(on, p, sess, km, owner=request.session_hash,
                                                                consent=ok)
        except (StudyLogError, gr.Error) as e:
            why = e.message if isinstance(e, gr.Error) else html.escape(str(e))
            log.info("study log refused: %s", one_line(html.unescape(why)))
            gr.Warning(why)
            return False
        log.info("study log %s (session %s, raw media %s)", "on" if on else "off", short(sess), bool(on and km))
        return on

    def on_consent(ok, s, request):
        study = tabs.seen(request.session_hash, s).study
        try:
            study.set_consent(ok)  # withdrawn: no more raw media, and the stored ones are deleted
        except (StudyLogError, OSError, OutputLocked) as e:
            raise user_error(f"Consent change failed: {one_line(e)}", stay=True) from None
        if not ok and study.notice:
            log.info("%s", study.notice)
            gr.Info(html.escape(study.notice))

    def on_self_report(text, s, request):
        check_text("the participant's own emotion", text, optional=True)
        try:
            tabs.seen(request.session_hash, s).study.set_self_report("" if text == NOT_STATED else text)
        except ValueError as e:
            raise user_error(str(e)) from None

    def on_csv(s):
        if s.study.log is None:
            raise user_error("Study logging is off: tick 'log this session' first.")
        if not s.study.own_log:
            raise user_error(f"This log was opened at start-up (--log-session): it is on the "
                             f"server at {s.study.log.path}, not exported to the page.")
        return str(s.study.log.export_csv())

    with_request(on_logging, on_consent, on_self_report)
    c["log_on"].input(guard(on_logging), [c["log_on"], c["who"], c["sid"], c["keep"], c["consent"], session],
                      [c["log_on"]], **BOX)
    c["consent"].input(guard(on_consent), [c["consent"], session], [], **BOX)
    c["self_report"].input(guard(on_self_report), [c["self_report"], session], [], **BOX)
    c["csv_btn"].click(guard(on_csv), [session], [c["csv_file"]], **PRIVATE)


def wire_markers(c: dict, session, tabs: Tabs) -> None:
    """The mark-event box, the recording indicator and the researcher's overview."""
    import gradio as gr

    def on_mark(event, condition, s, request):
        # the tab's own running session; else (a researcher's page beside participants'
        # pages) every running session of the app
        s = tabs.seen(request.session_hash, s)
        event, condition = check_text("event", event), check_text("condition", condition, optional=True)
        targets = [s] if s.runner.running else [t for t in tabs.sessions() if t.runner.running] or [s]
        try:
            marks = [t.study.mark(event, condition or None) for t in targets]
        except ValueError as e:
            raise user_error(str(e)) from None
        cond = f" ({marks[0].condition})" if marks[0].condition else ""
        where = f"at {marks[0].media_time:.1f} s" if targets == [s] else f"in {len(marks)} running session(s)"
        return f"marked **{marks[0].event}**{cond} {where}", ""

    def on_tick(s):
        rec = recording_markdown(s)
        view = gr.skip() if s.view.participant_view else sessions_markdown(tabs.sessions())
        return rec, view

    with_request(on_mark)
    marked = dict(fn=guard(on_mark), inputs=[c["mark_event"], c["mark_condition"], session],
                  outputs=[c["mark_status"], c["mark_event"]], **PRIVATE)
    c["mark_btn"].click(**marked)
    c["mark_event"].submit(**marked)
    gr.Timer(REFRESH_S).tick(guard(on_tick), [session], [c["recording"], c["overview"]], **QUIET)
