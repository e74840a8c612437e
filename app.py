"""Omni-Emotion Live: the Gradio page (docs/app.md).

    .venv/bin/python app.py [--model DIR|HUB_ID|tiny] [--plan NAME] [--port 7860]
                            [--host ADDR] [--share] [--auth-file FILE] [--log-file runs/app.log]
                            [--video FILE] [--log-session S --participant P] [--keep-media --consent]
                            [--markers lsl:NAME] [--lsl-out NAME] [--ssl-certfile F --ssl-keyfile F]
                            [--participant-view]

Live tab: the browser's webcam + microphone stream into a per-tab ``live.page.session.
LiveSession``; a timer draws its newest results (``live.page.render``). File tab (and the
``/analyse_file`` API endpoint): a video analysed window by window
(``live.page.file_analysis``). The model loads on a background thread
(``model.serve.serving.ModelHolder``), so the page is usable at once.

Security: the page binds to loopback; another ``--host`` or ``--share`` needs Gradio's
login (``--auth-file`` or ``$OMNI_EMOTION_AUTH``). A study log opened on the page belongs
to that browser session (``live.study_log.LogOwners``, keyed by Gradio's session hash);
``--log-session`` opens one log for the whole app (live tab, File tab, API, ``--video``).
Study mode: raw frames + audio are stored only with the participant's recorded consent
(the page's consent box, or ``--consent`` with ``--keep-media``); the emotion the
participant states (DFEW classes or free text) goes to every window record as
``self_report``, which ``python -m model.data.curate study`` takes as the gold label.

Study events (docs/study.md): the Live tab's "mark event" box (Enter, the button or
Alt+M) and ``--markers lsl:NAME`` (an LSL marker stream, sent to every running tab) put
markers on the session's timeline, its window records and its study log. HTTPS
(``--ssl-certfile/--ssl-keyfile``) lets participants' own devices use their camera;
``--participant-view`` (or ``?view=participant`` in the address) shows a participant the
camera preview, consent, self-report and a recording indicator but no labels.

Logging: one line per event on stderr; full tracebacks only in ``--log-file`` (every
page handler is wrapped by ``guard``: an unexpected error is one line for the client).
Privacy: Gradio's temporary files go to a folder of this process, removed at exit
(``live.page.hosting.private_temp_dir``); the face preview is sent inline (no file), and
microphone chunks and uploads are deleted once read.

This is the composition root: it wires ``live`` to ``model`` and (lazily) ``quant``,
and holds only the page and the command line.
"""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

import argparse
import functools
import html
import logging
import sys
import threading
from pathlib import Path

from live.contract.cli import (DEVICE_DEFAULT, DEVICE_HELP, EXIT_OK, EXIT_USAGE, CliError, one_line, resolve_device,
                      run_main)
from live.contract.appendfile import OutputLocked
from live.page.file_analysis import WindowsNotLogged, analyse_at_start, analyse_video
from live.page.hosting import (AUTH_ENV, LOG_FILE, check_exposure, check_port, discard_upload, exit_on_sigterm,
                          private_temp_dir, read_auth, setup_logging, start_sweeper)
from live.lsl import LSLError, MarkerInlet, WindowOutlet, marker_stream_name
from live.contract.media import HOP_S, MAX_WINDOW_S, WINDOW_S, check_window
from live.page.render import (NO_AUDIO, TABLE_COLUMNS, WAITING, draw_faces, file_outputs, image_html,
                         label_markdown, model_banner, recording_markdown, sessions_markdown,
                         speech_markdown, stats_markdown, streaming_label_markdown, timeline_figure)
from live.page.session import LiveSession, Tabs, limit_malloc, release_memory
from live.sources import SourceError
from live.study_log import KEEP_MEDIA_NEEDS_CONSENT, LogOwners, StudyLog, StudyLogError, check_id, short
from live.window import GATES
from model.net.answers import labels_complete, parse_answer
from model.net.templates import DFEW_CLASSES
from model.serve.generate import ANALYSIS_MAX_NEW_TOKENS
from model.serve.serving import ModelHolder

HOST, PORT = "127.0.0.1", 7860  # local only unless --host/--share say otherwise
STREAM_EVERY_S = 0.2  # s between webcam frames / mic chunks sent by the browser (~5/s)
REFRESH_S = 0.5  # s between page refreshes of the live outputs
PRIVATE = dict(api_visibility="private")  # page-only events: not part of the API
CONSENT_LABEL = "participant consents to storing recordings for research"
NOT_STATED = "(not stated)"  # the self-report choice that records none
QUIET = dict(show_progress="hidden", concurrency_limit=None, **PRIVATE)  # streams and timer
# Alt+M presses the "Mark event" button (a researcher marks without reaching for the mouse)
MARK_SHORTCUT_JS = """<script>
document.addEventListener("keydown", (e) => {
  if (e.altKey && !e.ctrlKey && !e.metaKey && e.code === "KeyM") {
    const b = document.querySelector("#mark_btn");
    if (b) { e.preventDefault(); b.click(); }
  }
});
</script>"""
MAX_UPLOAD_MB = 1024  # default upload limit (MB): a long phone video fits, a runaway upload does not
TEXT_MAX_CHARS = 200  # ids and texts a client sends are refused above this length


# --------------------------------------------------------------------- the model
def plan_names() -> list[str]:
    """["none", *quant plans]; just ["none"] while quant/ has no PLANS."""
    try:
        from quant.plans import PLANS
    except Exception:  # quant/ is optional here and may be half-written
        return ["none"]
    return ["none", *PLANS]


def load_with_plan(path, plan, device):
    """quant.load_model, imported on first use: the composition root is the one place
    that reaches quant/ (and bitsandbytes loads only when a plan is chosen)."""
    from quant import load_model

    return load_model(path, plan, device)


log = logging.getLogger("app")


def user_error(message: str, stay: bool = False):
    """A ``gr.Error`` for a user's mistake: shown on the page (until closed with
    ``stay``), one line in the log, no traceback anywhere. Gradio renders the message
    as HTML: it is escaped (a file name is text)."""
    import gradio as gr

    log.info("user error: %s", one_line(message))
    return gr.Error(html.escape(message), print_exception=False, duration=None if stay else 10)


def guard(fn):
    """A page handler whose unexpected errors are one line for the client and one in
    the log, the traceback in ``--log-file`` only (Gradio would print it on stderr)."""
    import gradio as gr

    @functools.wraps(fn)  # Gradio reads the signature (Request, Progress) through __wrapped__
    def handler(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as e:
            log.error("%s failed: %s: %s", fn.__name__, type(e).__name__, one_line(e), exc_info=e)
            raise user_error(f"Internal error ({type(e).__name__}); the details are in the server's "
                             "log file.") from None

    return handler


def check_text(name: str, value, optional: bool = False) -> str:
    """A text field as a client sent it: a str of at most TEXT_MAX_CHARS (user_error
    otherwise, repeating at most a few characters of it)."""
    if value is None and optional:
        return ""
    if not isinstance(value, str) or len(value) > TEXT_MAX_CHARS:
        raise user_error(f"{name} must be text of at most {TEXT_MAX_CHARS} characters, got {short(value)}")
    return value


def check_settings(window_s, hop_s, gate) -> None:
    """The window/hop/gate a client sent: numbers of seconds and a known gate."""
    for name, v in (("window", window_s), ("hop", hop_s)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise user_error(f"{name} must be a number of seconds, got {short(v)}")
    try:
        check_window(window_s, hop_s, names=("window", "hop"))
    except ValueError as e:
        raise user_error(str(e)) from None
    if not isinstance(gate, str) or gate not in GATES:
        raise user_error(f"analyse windows must be one of {', '.join(GATES)}, got {short(gate)}")


# --------------------------------------------------------------- the live outputs
def refresh(session: LiveSession):
    """Timer tick → (banner, faces, speech, label, explanation, timeline, stats);
    an unchanged output is skipped (nothing is sent for it)."""
    import gradio as gr

    s, sent = session, session.sent

    def changed(key, value) -> bool:
        if sent.get(key) == value:
            return False
        sent[key] = value
        return True

    def unless_same(key, value):
        return value if changed(key, value) else gr.skip()

    log_line = s.study.banner() if s.study else ""
    banner = "\n\n".join([model_banner(s.holder), log_line, *[f"⚠️ {w}" for w in s.warnings()]])
    if s.participant_view:  # a participant is sent no labels, faces or stats (they would bias)
        return (unless_same("banner", banner), *[gr.skip()] * 6)
    faces = gr.skip()
    if s.frame is not None and changed("frame", s.frame_no):
        faces = image_html(draw_faces(s.frame.rgb(), s.faces))  # inline: no file of the face
    r = s.latest
    label, text = label_markdown(r), (r or {}).get("explanation", "")
    flight, partial = s.in_flight, s.partial  # read once: the analyser thread moves both
    if flight is not None and partial:
        text = partial
        if labels_complete(partial):  # the label the moment its list closes in the stream
            parsed = parse_answer(partial)
            label, text = streaming_label_markdown(parsed.label, parsed.labels, flight[1]), parsed.explanation
    markers = s.markers.markers()
    timeline = (timeline_figure(s.records, markers=markers)
                if changed("timeline", (len(s.records), len(markers))) else gr.skip())
    speech = speech_markdown(s.engine, stopped=s.paused and not s.running)
    return (unless_same("banner", banner), faces, unless_same("speech", speech),
            unless_same("label", label), unless_same("explanation", text), timeline,
            unless_same("stats", stats_markdown(s.stats())))


# ------------------------------------------------------------------------ the page
def _live_tab(a: argparse.Namespace, holder: ModelHolder) -> dict:
    """The Live tab's components, by name."""
    import gradio as gr

    c = {}
    pv = a.participant_view  # researcher-only parts start hidden; on_view sets them per page
    with gr.Row():
        with gr.Column(scale=1):
            c["recording"] = gr.Markdown(elem_id="recording")
            c["cam"] = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam",
                                elem_id="webcam")
            # filepath: the handler reads each chunk and deletes it (numpy would leave the file)
            c["mic"] = gr.Audio(sources=["microphone"], streaming=True, type="filepath", format=None,
                                label="Microphone", elem_id="mic")
            with gr.Row():
                c["start"] = gr.Button("Start / restart", variant="primary")
                c["stop"] = gr.Button("Stop", elem_id="stop")
            with gr.Accordion("Settings (apply on start / restart)", open=False, visible=not pv) as acc:
                c["settings"] = acc
                c["win"] = gr.Slider(1, MAX_WINDOW_S, a.window, step=0.5, label="window (s)")
                c["hop"] = gr.Slider(0.5, 8, a.hop, step=0.5, label="hop (s)")
                c["gate"] = gr.Radio(list(GATES), value=a.gate, label="analyse windows")
                c["plan"] = gr.Dropdown(plan_names(), value=holder.plan or "none", label="plan")
                c["reload"] = gr.Button("Reload model with this plan")
            with gr.Accordion("Study log (opt-in)", open=bool(a.log_session)):
                c["who"] = gr.Textbox(a.participant or "", label="participant id")
                c["sid"] = gr.Textbox(a.log_session or "", label="session id")
                c["consent"] = gr.Checkbox(a.consent, label=CONSENT_LABEL, elem_id="consent")
                c["keep"] = gr.Checkbox(a.keep_media, label="also store raw frames + audio "
                                        "(needs the consent above)", elem_id="keep_media")
                # the DFEW classes keep labels consistent for curation; any other word may be typed
                c["self_report"] = gr.Dropdown([NOT_STATED, *DFEW_CLASSES], value=NOT_STATED,
                                               allow_custom_value=True, elem_id="self_report",
                                               label="participant's own emotion now (pick, or type another)")
                c["log_on"] = gr.Checkbox(False, label=f"log this session to {a.log_dir}/<session>.jsonl",
                                          elem_id="log_on")
                c["csv_btn"] = gr.Button("Export session CSV")
                c["csv_file"] = gr.File(label="session CSV", elem_id="csv_file")
        with gr.Column(scale=2, visible=not pv) as analysis:
            c["analysis"] = analysis
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
    return c


def _file_tab(a: argparse.Namespace) -> dict:
    """The File tab's components, by name; ``outputs`` in ``file_outputs`` order."""
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


def _wire_live(c: dict, banner, session, holder: ModelHolder, tabs: Tabs) -> None:
    """Streams in, the refresh timer out, and the Live tab's buttons."""
    import gradio as gr

    def on_frame(f, s, request):
        tabs.seen(request.session_hash, s).push_frame(f)

    def on_chunk(path, s, request):
        s = tabs.seen(request.session_hash, s)
        if not path:
            return
        if not isinstance(path, str):
            raise user_error(f"a microphone chunk must be an uploaded file, got {short(path)}")
        try:
            if not s.paused or s.running:  # after Stop the chunk is not even read
                from gradio.processing_utils import audio_from_file

                s.push_audio(audio_from_file(path))
        finally:
            discard_upload(path)  # the participant's voice is not kept in Gradio's folder

    for fn in (on_frame, on_chunk):
        fn.__annotations__ = {"request": gr.Request}  # Gradio injects the request
    c["cam"].stream(guard(on_frame), [c["cam"], session], [], stream_every=STREAM_EVERY_S, **QUIET)
    c["mic"].stream(guard(on_chunk), [c["mic"], session], [], stream_every=STREAM_EVERY_S, **QUIET)
    outs = [banner, c["faces"], c["speech"], c["label"], c["expl"], c["timeline"], c["stats"]]
    gr.Timer(REFRESH_S).tick(guard(refresh), [session], outs, **QUIET)

    def on_start(w, h, g, s, request):
        check_settings(w, h, g)
        s = tabs.seen(request.session_hash, s)
        s.window_s, s.hop_s, s.gate = w, h, g
        s.restart()

    on_start.__annotations__ = {"request": gr.Request}

    def on_logging(on, p, sess, km, ok, s, request):
        # the owner is the caller's own Gradio session, never an id the client names
        try:
            check_text("participant id", p, optional=True), check_text("session id", sess, optional=True)
            tabs.seen(request.session_hash, s).set_logging(on, p, sess, km, owner=request.session_hash,
                                                          consent=ok)
        except (StudyLogError, gr.Error) as e:
            why = e.message if isinstance(e, gr.Error) else html.escape(str(e))
            log.info("study log refused: %s", one_line(html.unescape(why)))
            gr.Warning(why)
            return False
        log.info("study log %s (session %s, raw media %s)", "on" if on else "off", short(sess), bool(on and km))
        return on

    on_logging.__annotations__ = {"request": gr.Request}  # Gradio injects the request

    def on_consent(ok, s, request):
        s = tabs.seen(request.session_hash, s)
        try:
            s.set_consent(ok)  # withdrawn: no more raw media, and the stored ones are deleted
        except (StudyLogError, OSError, OutputLocked) as e:
            raise user_error(f"Consent change failed: {one_line(e)}", stay=True) from None
        if not ok and s.notice:
            log.info("%s", s.notice)
            gr.Info(html.escape(s.notice))

    def on_self_report(text, s, request):
        check_text("the participant's own emotion", text, optional=True)
        try:
            tabs.seen(request.session_hash, s).set_self_report("" if text == NOT_STATED else text)
        except ValueError as e:
            raise user_error(str(e)) from None

    for fn in (on_consent, on_self_report):
        fn.__annotations__ = {"request": gr.Request}

    def on_csv(s):
        if s.study is None:
            raise user_error("Study logging is off: tick 'log this session' first.")
        if not s.own_log:
            raise user_error(f"This log was opened at start-up (--log-session): it is on the "
                             f"server at {s.study.path}, not exported to the page.")
        return str(s.study.export_csv())

    def on_stop(s):
        s.stop()

    c["start"].click(guard(on_start), [c["win"], c["hop"], c["gate"], session], [], **PRIVATE)
    c["stop"].click(guard(on_stop), [session], [], **PRIVATE)
    # always_last: a click while the previous one is still being answered is sent after
    # it, never dropped (Gradio's default "once" would drop it and leave the box showing
    # a state the server never got)
    c["log_on"].input(guard(on_logging), [c["log_on"], c["who"], c["sid"], c["keep"], c["consent"], session],
                      [c["log_on"]], trigger_mode="always_last", **PRIVATE)
    c["consent"].input(guard(on_consent), [c["consent"], session], [], trigger_mode="always_last", **PRIVATE)
    c["self_report"].input(guard(on_self_report), [c["self_report"], session], [],
                           trigger_mode="always_last", **PRIVATE)
    c["csv_btn"].click(guard(on_csv), [session], [c["csv_file"]], **PRIVATE)
    def on_reload(plan):
        if plan not in plan_names():
            raise user_error(f"plan must be one of {', '.join(plan_names())}, got {short(plan)}")
        try:
            holder.start(plan=plan)
        except ValueError as e:  # a pool's plan is fixed at its start
            raise user_error(str(e)) from None

    c["reload"].click(guard(on_reload), [c["plan"]], [], **PRIVATE)
    _wire_study(c, session, tabs)


def _wire_study(c: dict, session, tabs: Tabs) -> None:
    """The mark-event box, the recording indicator and the researcher's overview."""
    import gradio as gr

    def on_mark(event, condition, s, request):
        # the tab's own running session; else (a researcher's page beside participants'
        # pages) every running session of the app
        s = tabs.seen(request.session_hash, s)
        event, condition = check_text("event", event), check_text("condition", condition, optional=True)
        targets = [s] if s.running else [t for t in tabs.sessions() if t.running] or [s]
        try:
            marks = [t.mark(event, condition or None) for t in targets]
        except ValueError as e:
            raise user_error(str(e)) from None
        cond = f" ({marks[0].condition})" if marks[0].condition else ""
        where = f"at {marks[0].media_time:.1f} s" if targets == [s] else f"in {len(marks)} running session(s)"
        return f"marked **{marks[0].event}**{cond} {where}", ""

    def on_tick(s):
        rec = recording_markdown(s)
        view = gr.skip() if s.participant_view else sessions_markdown(tabs.sessions())
        return rec, view

    on_mark.__annotations__ = {"request": gr.Request}
    marked = dict(fn=guard(on_mark), inputs=[c["mark_event"], c["mark_condition"], session],
                  outputs=[c["mark_status"], c["mark_event"]], **PRIVATE)
    c["mark_btn"].click(**marked)
    c["mark_event"].submit(**marked)
    gr.Timer(REFRESH_S).tick(guard(on_tick), [session], [c["recording"], c["overview"]], **QUIET)


def _wire_file(f: dict, live: dict, session, holder: ModelHolder, export_dir: Path) -> None:
    """The Analyse button, which is also the ``/analyse_file`` API endpoint. Its
    windows go to the caller's study log when one is on (the tab's own, or the app's
    ``--log-session`` log, which API callers share), with the tab's self-report; the
    upload is deleted once analysed (or refused); exports go under ``export_dir``."""
    import gradio as gr

    def analyse_file(path, window_s, hop_s, gate_policy, s, progress=gr.Progress()):
        """Analyse a video file window by window → status, table, timeline, JSONL, CSV."""
        if s.participant_view:
            raise user_error("A participant's page does not analyse files.")
        name = Path(path).name if isinstance(path, str) and path else "the upload"
        try:
            if not path:
                raise user_error("Upload a video file first.")
            if not isinstance(path, str):
                raise user_error(f"the video must be an uploaded file, got {short(path)}")
            # name: the upload's own name (Gradio keeps it), never the server's temp path
            if not Path(path).is_file():
                raise user_error(f"{name} is no longer on the server (uploads are deleted once "
                                 "analysed): upload it again.", stay=True)
            check_settings(window_s, hop_s, gate_policy)
            progress(0.0, desc="decoding + analysing")
            records = analyse_video(path, holder, window_s, hop_s, gate_policy, study=s.study,
                                    progress=lambda frac: progress(frac, desc="analysing"),
                                    fields={"self_report": s.self_report, "self_report_at": s.self_report_at},
                                    name=name)
            return file_outputs(records, name, export_dir)
        except SourceError as e:
            raise user_error(f"Cannot analyse this upload: {one_line(e)}", stay=True) from None  # e names the file
        except (OSError, StudyLogError) as e:  # WindowsNotLogged names the windows not stored
            raise user_error(f"{name}: {one_line(e)}" if isinstance(e, (WindowsNotLogged, StudyLogError))
                             else f"The results of {name} could not be stored: {one_line(e)}", stay=True) from None
        finally:
            discard_upload(path if isinstance(path, str) else None)  # refused ones too
            release_memory()

    f["go"].click(guard(analyse_file), [f["video"], live["win"], live["hop"], live["gate"], session],
                  f["outputs"], api_name="analyse_file")


def build_ui(holder: ModelHolder, args: argparse.Namespace | None = None, startup=None,
             shared_log: StudyLog | None = None, owners: LogOwners | None = None,
             inlet: MarkerInlet | None = None, outlet: WindowOutlet | None = None):
    """The page. ``args``: defaults for settings; ``startup``: a dict filled by a
    ``--video`` job (its file outputs are shown on page load); ``shared_log``: the
    ``--log-session`` log every way of analysing writes to; ``owners``: who owns which
    study session id (a fresh ``LogOwners`` when not given); ``inlet``: an opened
    ``--markers`` LSL inlet (started here, its markers sent to every open tab);
    ``outlet``: the ``--lsl-out`` streams every tab's analysed windows go to."""
    import gradio as gr

    a = args or parse_args([])
    owners = owners or LogOwners()
    tabs = Tabs()
    with gr.Blocks(title="Omni-Emotion Live", analytics_enabled=False) as demo:
        gr.Markdown("# Omni-Emotion Live\nWhat emotion the person in front of the camera "
                    "shows, and why. Everything runs on this machine.")
        banner = gr.Markdown(model_banner(holder), elem_id="banner")
        def new_session() -> LiveSession:
            s = LiveSession(holder, a.window, a.hop, a.gate, a.log_dir, shared_log=shared_log, owners=owners)
            s.outlet, s.lsl_markers = outlet, inlet is not None
            return s

        session = gr.State(new_session, delete_callback=lambda s: s.close())
        with gr.Tab("Live"):
            live = _live_tab(a, holder)
        with gr.Tab("File"):  # (Gradio 6 does not hide a tab's header: its content is hidden)
            with gr.Column(visible=not a.participant_view) as file_tab:
                file = _file_tab(a)
        _wire_live(live, banner, session, holder, tabs)
        _wire_file(file, live, session, holder, Path(a.log_dir) / "exports")

        def on_load(s):
            # the consent box shows the log's consent (withdrawn in another tab: unticked here)
            consent = s.study.consent if s.study is not None else gr.skip()
            done = (startup or {}).get("outputs")
            if done is None:
                return s.study is not None, consent, (startup or {}).get("status", ""), *[gr.skip()] * 4
            return s.study is not None, consent, *done

        demo.load(guard(on_load), [session], [live["log_on"], live["consent"], *file["outputs"]], **PRIVATE)

        def on_view(s, request):
            # the flag makes every page a participant's; else ?view=participant does
            s.participant_view = a.participant_view or request.query_params.get("view") == "participant"
            return [gr.update(visible=not s.participant_view)] * 3

        on_view.__annotations__ = {"request": gr.Request}
        demo.load(guard(on_view), [session], [live["settings"], live["analysis"], file_tab], **PRIVATE)
        if inlet is not None:  # one LSL marker stream for the app: every running tab gets each marker
            inlet.start(lambda event, cond, t: [s.lsl_marker(event, cond, t) for s in tabs.sessions()],
                        on_heard=lambda t: [s.lsl_heard(t) for s in tabs.sessions()])

        def on_unload(request):
            if tabs.closed(request.session_hash):
                release_memory()
                log.info("tab closed: its live session stopped (%d tabs open)", len(tabs))

        on_unload.__annotations__ = {"request": gr.Request}
        demo.unload(guard(on_unload))
    return demo


# -------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python app.py", description="Omni-Emotion Live web page")
    p.add_argument("--model", help="checkpoint folder, hub id, or 'tiny' (the built-in random "
                   "model); default: the 0.5b preset composed from public weights")
    p.add_argument("--plan", help=f"precision plan (quant/): {', '.join(plan_names()[1:]) or 'none yet'}")
    p.add_argument("--pool", metavar="ADDRESS|local:N",
                   help="analyse on a pool of --model replicas (docs/serving.md): local:N starts N "
                        "here, HOST:PORT joins a Ray cluster")
    p.add_argument("--device", default=DEVICE_DEFAULT, help=DEVICE_HELP)
    p.add_argument("--max-new-tokens", type=int, default=ANALYSIS_MAX_NEW_TOKENS,
                   help="generation budget per window (the tiny model caps it at 24)")
    p.add_argument("--host", default=HOST, help="address to bind (default: local only)")
    p.add_argument("--port", type=int, default=PORT)
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link "
                   "(needs a login: --auth-file or $" + AUTH_ENV + ")")
    p.add_argument("--auth-file", help="login(s) for the page, one user:password per line; "
                   f"required with --share or a non-loopback --host (or set ${AUTH_ENV}=user:password)")
    p.add_argument("--log-file", default=LOG_FILE, help="where full error tracebacks go")
    p.add_argument("--max-upload-mb", type=int, default=MAX_UPLOAD_MB,
                   help="largest video the File tab and /analyse_file accept (MB)")
    p.add_argument("--video", help="analyse this file at start (shown in the File tab)")
    p.add_argument("--window", type=float, default=WINDOW_S, help="s per window")
    p.add_argument("--hop", type=float, default=HOP_S, help="s between windows")
    p.add_argument("--gate", choices=GATES, default="always", help="which windows to analyse")
    p.add_argument("--log-session", help="study log session id (turns logging on)")
    p.add_argument("--participant", help="study participant id (with --log-session)")
    p.add_argument("--log-dir", default="sessions", help="folder of study logs")
    p.add_argument("--keep-media", action="store_true", help="store raw frames + audio in logs "
                   "(needs --consent)")
    p.add_argument("--consent", action="store_true", help="the participant consents to storing "
                   "recordings for research (recorded in the study log; ticks the page's consent box)")
    p.add_argument("--markers", metavar="lsl:NAME", help="event markers from the LSL stream NAME "
                   "(docs/study.md), sent to every running live session")
    p.add_argument("--lsl-out", metavar="NAME", help="publish every tab's analysed windows as LSL "
                   "streams NAME (JSON) and NAME-values (docs/study.md)")
    p.add_argument("--ssl-certfile", help="serve over HTTPS with this certificate (PEM); browsers give "
                   "a page on another machine the camera only over HTTPS (docs/study.md)")
    p.add_argument("--ssl-keyfile", help="the certificate's private key (PEM), with --ssl-certfile")
    p.add_argument("--participant-view", action="store_true", help="every page is a participant's: "
                   "camera preview, consent, self-report, a recording indicator, no labels")
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Usage errors found before any work, as CliError; sets ``args.auth``."""
    plans = plan_names()
    if args.plan is not None and args.plan not in plans:
        raise CliError(f"--plan {args.plan!r} is not a plan: choose one of {', '.join(plans)}")
    try:
        check_window(args.window, args.hop, names=("--window", "--hop"))
    except ValueError as e:
        raise CliError(str(e)) from None
    args.auth = read_auth(args.auth_file)
    check_exposure(args.host, args.share, args.auth)
    if args.keep_media and not args.consent:
        raise CliError(f"--keep-media: {KEEP_MEDIA_NEEDS_CONSENT}: add --consent once they have given it")
    if bool(args.log_session) != bool(args.participant):
        raise CliError("--log-session and --participant go together")
    if args.log_session:
        try:
            check_id("session", args.log_session), check_id("participant", args.participant)
        except StudyLogError as e:
            raise CliError(str(e)) from None
    if args.video and not Path(args.video).is_file():
        raise CliError(f"--video file not found: {args.video}")
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise CliError("--ssl-certfile and --ssl-keyfile go together")
    for opt, f in (("--ssl-certfile", args.ssl_certfile), ("--ssl-keyfile", args.ssl_keyfile)):
        if f and not Path(f).is_file():
            raise CliError(f"{opt} file not found: {f}")
    if args.markers:
        try:
            marker_stream_name(args.markers)
        except ValueError as e:
            raise CliError(str(e)) from None
    if args.max_upload_mb <= 0:
        raise CliError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    check_port(args.host, args.port)  # before the model loads: one line advising --port


def start_pool_server(args: argparse.Namespace, plan: str | None):
    """--pool: the model served by a pool (model.serve.pool); None after a one-line error."""
    from model.serve.pool import PoolConfig, start_pool

    try:
        if not args.model:
            raise CliError("--pool needs --model DIR or --model tiny (what the replicas load)")
        cfg = PoolConfig(model=args.model, plan=plan, loader="quant:load_model" if plan else None,
                         device=args.device, max_new_tokens=args.max_new_tokens)
        return start_pool(args.pool, cfg).server()
    except (CliError, RuntimeError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(lambda: run_page(args))


def run_page(args: argparse.Namespace) -> int:
    """Check the options, start the model and the page, and serve until stopped."""
    shared_log = None
    try:
        check_args(args)
        args.device = resolve_device(args.device)  # --device cuda on a machine without one: here, one line
        setup_logging(args.log_file)
        if args.log_session:
            shared_log = StudyLog(args.log_dir, args.log_session, args.participant, args.keep_media,
                                  consent=args.consent)
        inlet = MarkerInlet(marker_stream_name(args.markers)).open() if args.markers else None
        outlet = WindowOutlet(args.lsl_out) if args.lsl_out else None
    except (OSError, StudyLogError, OutputLocked, LSLError, ValueError) as e:  # OutputLocked: another app writes it
        raise CliError(one_line(e)) from None  # bad input, before any work: exit 2
    limit_malloc()  # before the threads that allocate start
    owners = LogOwners()
    if shared_log is not None:
        owners.reserve(args.log_dir, args.log_session, "app")  # no tab can open it as its own
    plan = None if args.plan in (None, "none") else args.plan
    if args.pool:
        holder = start_pool_server(args, plan)
        if holder is None:
            return EXIT_USAGE
    else:
        holder = ModelHolder(args.model, plan, args.device, args.max_new_tokens,
                             plan_loader=load_with_plan)
        holder.start()
    startup: dict = {}
    if args.video:
        threading.Thread(target=analyse_at_start, daemon=True,
                         args=(holder, args.video, args.window, args.hop, args.gate, startup, shared_log,
                               Path(args.log_dir) / "exports")).start()
    private_temp_dir()  # before gradio is imported: its files go to a folder removed at exit
    start_sweeper()  # and what its stream queue leaves there is deleted within seconds
    exit_on_sigterm()
    demo = build_ui(holder, args, startup, shared_log, owners, inlet, outlet)
    theme = __import__("gradio").themes.Default(font=["system-ui", "sans-serif"],
                                                font_mono=["ui-monospace", "monospace"])
    # system fonts: the page makes no request outside this machine
    # quiet: no "set share=True" advice (--share here needs a login); the URL is said below
    try:
        demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share,
                            show_error=True, theme=theme, auth=args.auth or None, quiet=True, head=MARK_SHORTCUT_JS,
                            ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
                            ssl_verify=not args.ssl_certfile,  # a lab's self-signed certificate
                            max_file_size=args.max_upload_mb * 2**20, prevent_thread_lock=True,
                            auth_message="Omni-Emotion Live: log in (ask the researcher running it)")
    except OSError as e:  # the port was taken between check_port and now
        raise CliError(f"cannot listen on {args.host}:{args.port} ({one_line(e)}): choose another "
                       "port with --port N") from None
    scheme = "https" if args.ssl_certfile else "http"
    print(f"* Running on local URL:  {scheme}://{args.host}:{demo.server_port}", flush=True)
    try:
        demo.block_thread()
    finally:
        demo.close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
