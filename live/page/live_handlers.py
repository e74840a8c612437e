"""The Live tab's engine handlers: the browser's webcam frames and microphone chunks
pushed into the caller's page session, the refresh timer (``live.page.refresh``), and
the Start / Stop / Reload-plan buttons. Every handler is ``live.page.guard.guard``ed;
a handler that gets the request first notes its tab in ``Tabs`` (closing the tab stops
its engine).
"""
from __future__ import annotations

from live.page.guard import PRIVATE, QUIET, check_settings, guard, user_error, with_request
from live.page.hosting import discard_upload
from live.page.refresh import REFRESH_S, refresh
from live.page.session import Tabs
from live.study_log import short

STREAM_EVERY_S = 0.2  # s between webcam frames / mic chunks sent by the browser (~5/s)


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
