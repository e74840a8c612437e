"""Omni-Emotion Live: the Gradio page (docs/app.md).

    .venv/bin/python app.py [--model DIR|HUB_ID|tiny] [--plan NAME] [--port 7860]
                            [--host ADDR] [--share] [--auth-file FILE] [--log-file runs/app.log]
                            [--video FILE] [--log-session S --participant P] [--keep-media --consent]
                            [--markers lsl:NAME] [--lsl-out NAME] [--ssl-certfile F --ssl-keyfile F]
                            [--participant-view]

The composition root: it wires ``live`` to ``model`` and (lazily) ``quant``, and holds
the page's assembly and the command line; the page's parts (page session, tabs, guard,
hosting, file analysis) are in ``live/page/``. Flags, security, study logs and where each
part lives: docs/app.md.
"""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

import argparse
import logging
import sys
import threading
from pathlib import Path

from live.contract.appendfile import OutputLocked
from live.contract.cli import (DEVICE_DEFAULT, DEVICE_HELP, EXIT_OK, EXIT_USAGE, CliError, one_line, resolve_device,
                               run_main)
from live.contract.media import HOP_S, MAX_WINDOW_S, WINDOW_S, check_window
from live.lsl import LSLError, MarkerInlet, WindowOutlet, marker_stream_name
from live.page.file_analysis import analyse_at_start, wire_file
from live.page.guard import PRIVATE, guard, with_request
from live.page.hosting import (AUTH_ENV, LOG_FILE, check_exposure, check_port, exit_on_sigterm, limit_malloc,
                               private_temp_dir, read_auth, release_memory, setup_logging, start_sweeper)
from live.page.live_tab import NOT_STATED, wire_controls, wire_markers, wire_streams, wire_study_log
from live.page.render import NO_AUDIO, TABLE_COLUMNS, WAITING, model_banner
from live.page.session import PageSession, Tabs
from live.study_log import KEEP_MEDIA_NEEDS_CONSENT, LogOwners, StudyLog, StudyLogError, check_id
from live.window import GATES
from model.net.templates import DFEW_CLASSES
from model.serve.generate import ANALYSIS_MAX_NEW_TOKENS
from model.serve.loader import PLAN_LOADER
from model.serve.serving import ModelHolder

HOST, PORT = "127.0.0.1", 7860  # local only unless --host/--share say otherwise
MAX_UPLOAD_MB = 1024  # default upload limit (MB): a long phone video fits, a runaway upload does not
CONSENT_LABEL = "participant consents to storing recordings for research"
# Alt+M presses the "Mark event" button (a researcher marks without reaching for the mouse)
MARK_SHORTCUT_JS = """<script>
document.addEventListener("keydown", (e) => {
  if (e.altKey && !e.ctrlKey && !e.metaKey && e.code === "KeyM") {
    const b = document.querySelector("#mark_btn");
    if (b) { e.preventDefault(); b.click(); }
  }
});
</script>"""

log = logging.getLogger("app")


# --------------------------------------------------------------------- the model
def plan_names() -> list[str]:
    """["none", *quant plans]; just ["none"] while quant/ has no PLANS."""
    try:
        from quant.plans import PLANS
    except Exception:  # quant/ is optional here and may be half-written
        return ["none"]
    return ["none", *PLANS]


# ------------------------------------------------------------------------ the page
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
    tabs, plans = Tabs(), plan_names()
    with gr.Blocks(title="Omni-Emotion Live", analytics_enabled=False) as demo:
        gr.Markdown("# Omni-Emotion Live\nWhat emotion the person in front of the camera "
                    "shows, and why. Everything runs on this machine.")
        banner = gr.Markdown(model_banner(holder), elem_id="banner")

        def new_session() -> PageSession:
            s = PageSession(holder, a.window, a.hop, a.gate, a.log_dir, shared_log=shared_log, owners=owners)
            s.study.outlet, s.study.lsl_markers = outlet, inlet is not None
            return s

        session = gr.State(new_session, delete_callback=lambda s: s.close())
        with gr.Tab("Live"):
            live = _live_tab(a, plans, holder.plan)
        with gr.Tab("File"):  # (Gradio 6 does not hide a tab's header: its content is hidden)
            with gr.Column(visible=not a.participant_view) as hidden:
                file = _file_tab(a)
        wire_streams(live, banner, session, tabs)
        wire_controls(live, session, holder, tabs, plans)
        wire_study_log(live, session, tabs)
        wire_markers(live, session, tabs)
        wire_file(file, live, session, holder, Path(a.log_dir) / "exports")
        _wire_tab_events(demo, session, live, file, [live["settings"], live["analysis"], hidden], a, startup, tabs)
        if inlet is not None:  # one LSL marker stream for the app: every running tab gets each marker
            inlet.start(lambda event, cond, t: [s.study.lsl_marker(event, cond, t) for s in tabs.sessions()],
                        on_heard=lambda t: [s.study.lsl_heard(t) for s in tabs.sessions()])
    return demo


def _live_tab(a: argparse.Namespace, plans: list[str], plan: str | None) -> dict:
    """The Live tab's components, by name. ``plans``: the plan choices, ``plan`` the served one."""
    import gradio as gr

    c = {}
    with gr.Row():
        with gr.Column(scale=1):
            _inputs(c, a, plans, plan)
            _study_log(c, a)
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


def _study_log(c: dict, a: argparse.Namespace) -> None:
    import gradio as gr

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


def _file_tab(a: argparse.Namespace) -> dict:
    """The File tab's components, by name; ``outputs`` in ``live.page.file_analysis.file_outputs`` order."""
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


def _wire_tab_events(demo, session, live: dict, file: dict, researcher_only: list, a: argparse.Namespace,
                     startup: dict | None, tabs: Tabs) -> None:
    """A page opened (the log's state, a ``--video`` job's outputs, the participant
    view hiding ``researcher_only``) and closed (its page session stops at once)."""
    import gradio as gr

    def on_load(s):
        # the consent box shows the log's consent (withdrawn in another tab: unticked here)
        logging_on = s.study.log is not None
        consent = s.study.log.consent if logging_on else gr.skip()
        done = (startup or {}).get("outputs")
        if done is None:
            return logging_on, consent, (startup or {}).get("status", ""), *[gr.skip()] * 4
        return logging_on, consent, *done

    def on_view(s, request):
        # the flag makes every page a participant's; else ?view=participant does
        s.view.participant_view = a.participant_view or request.query_params.get("view") == "participant"
        return [gr.update(visible=not s.view.participant_view)] * 3

    def on_unload(request):
        if tabs.closed(request.session_hash):
            release_memory()
            log.info("tab closed: its live session stopped (%d tabs open)", len(tabs))

    with_request(on_view, on_unload)
    demo.load(guard(on_load), [session], [live["log_on"], live["consent"], *file["outputs"]], **PRIVATE)
    demo.load(guard(on_view), [session], researcher_only, **PRIVATE)
    demo.unload(guard(on_unload))


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
    _usage(check_window, args.window, args.hop, names=("--window", "--hop"))
    args.auth = read_auth(args.auth_file)
    check_exposure(args.host, args.share, args.auth)
    if args.keep_media and not args.consent:
        raise CliError(f"--keep-media: {KEEP_MEDIA_NEEDS_CONSENT}: add --consent once they have given it")
    if bool(args.log_session) != bool(args.participant):
        raise CliError("--log-session and --participant go together")
    if args.log_session:
        _usage(check_id, "session", args.log_session), _usage(check_id, "participant", args.participant)
    if args.video and not Path(args.video).is_file():
        raise CliError(f"--video file not found: {args.video}")
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise CliError("--ssl-certfile and --ssl-keyfile go together")
    for opt, f in (("--ssl-certfile", args.ssl_certfile), ("--ssl-keyfile", args.ssl_keyfile)):
        if f and not Path(f).is_file():
            raise CliError(f"{opt} file not found: {f}")
    if args.markers:
        _usage(marker_stream_name, args.markers)
    if args.max_upload_mb <= 0:
        raise CliError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    check_port(args.host, args.port)  # before the model loads: one line advising --port


def _usage(check, *args, **kwargs) -> None:
    """``check(*args, **kwargs)``, its ValueError (StudyLogError too) a CliError."""
    try:
        check(*args, **kwargs)
    except ValueError as e:
        raise CliError(str(e)) from None


def start_pool_server(args: argparse.Namespace, plan: str | None):
    """--pool: the model served by a pool (model.serve.pool); None after a one-line error."""
    from model.serve.pool import PoolConfig, start_pool

    try:
        if not args.model:
            raise CliError("--pool needs --model DIR or --model tiny (what the replicas load)")
        cfg = PoolConfig(model=args.model, plan=plan, loader=PLAN_LOADER if plan else None,
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
    holder = start_model(args)
    if holder is None:
        return EXIT_USAGE
    startup: dict = {}
    if args.video:
        threading.Thread(target=analyse_at_start, daemon=True,
                         args=(holder, args.video, args.window, args.hop, args.gate, startup, shared_log,
                               Path(args.log_dir) / "exports")).start()
    private_temp_dir()  # before gradio is imported: its files go to a folder removed at exit
    start_sweeper()  # and what its stream queue leaves there is deleted within seconds
    exit_on_sigterm()
    serve(build_ui(holder, args, startup, shared_log, owners, inlet, outlet), args)
    return EXIT_OK


def start_model(args: argparse.Namespace):
    """The served model, loading in the background (or a pool's); None after a one-line error."""
    plan = None if args.plan in (None, "none") else args.plan
    if args.pool:
        return start_pool_server(args, plan)
    # quant.load_model by name, imported on first use: the composition root is the one
    # place that reaches quant/ (and bitsandbytes loads only when a plan is chosen)
    holder = ModelHolder(args.model, plan, args.device, args.max_new_tokens, plan_loader=PLAN_LOADER)
    holder.start()
    return holder


def serve(demo, args: argparse.Namespace) -> None:
    """Launch the page and serve it until stopped."""
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


if __name__ == "__main__":
    sys.exit(main())
