"""The Live tab's study handlers: the study-log box (owned by the caller's own browser
session, never an id the client names), consent, the self-report, the session CSV, the
mark-event box, and the timer of the recording indicator and the researcher's
overview. Every handler is ``live.page.guard.guard``ed.
"""
from __future__ import annotations

import html

from live.contract.appendfile import OutputLocked
from live.contract.cli import one_line
from live.page.guard import PRIVATE, QUIET, check_text, guard, log, user_error, with_request
from live.page.layout import NOT_STATED
from live.page.refresh import REFRESH_S
from live.page.render import recording_markdown, sessions_markdown
from live.page.session import Tabs
from live.study_log import StudyLogError, short

# always_last: a click while the previous one is still being answered is sent after
# it, never dropped (Gradio's default "once" would drop it and leave the box showing
# a state the server never got)
BOX = dict(trigger_mode="always_last", **PRIVATE)


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
            marks = [t.mark(event, condition or None) for t in targets]
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
