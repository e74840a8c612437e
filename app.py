"""Omni-Emotion Live: the Gradio page (docs/app.md).

    python app.py [--model DIR|HUB_ID|tiny] [--plan NAME] [--port 7860] [--share]
                  [--video FILE] [--log-session S --participant P] [--keep-media]

Live tab: the browser's webcam + microphone stream into a per-session ``LiveSession``
(a ``live`` PushSource + Engine); a timer renders the newest results. File tab (and
the ``/analyse_file`` API endpoint): a video analysed window by window. The model
loads on a background thread (``ModelHolder``), so the page is usable at once.

This is a composition root: it may import ``live``, ``model`` and (lazily) ``quant``.
"""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

import argparse
import collections
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from live.engine import Engine, EngineConfig, WindowEvent
from live.sources import FileSource, PushSource, SourceError
from live.study_log import StudyLog, StudyLogError, check_id, write_csv
from live.window import GATES, HOP_S, WINDOW_S
from model.serve.serving import ModelHolder

HOST, PORT = "127.0.0.1", 7860  # local only unless --host/--share say otherwise
STREAM_EVERY_S = 0.2  # s between webcam frames / mic chunks sent by the browser (~5/s)
REFRESH_S = 0.5  # s between page refreshes of the live outputs
FPS_SPAN_S = 2.0  # s of frame arrivals that "frames/s in" averages over
NO_MEDIA_WARN_S = 5.0  # s after start without frames / audio before the page warns
BOX_RGB = (0, 255, 0)  # face box colour (pure green: absent from skin and test media)
TABLE_COLUMNS = ["index", "start", "end", "label", "labels", "explanation", "analysed", "latency_s"]


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


# ------------------------------------------------------------ records and rendering
def window_record(ev: WindowEvent, now: float | None = None, **extra) -> dict:
    """A ``WindowEvent`` → the flat dict shown in tables and written to study logs."""
    w, r = ev.window, ev.result or {}
    rec = {"index": w.index, "start": round(w.start, 3), "end": round(w.end, 3),
           "analysed": ev.analysed and "pending" not in r, "reason": ev.reason or r.get("pending"),
           "label": r.get("label"), "labels": list(r.get("labels") or []),
           "explanation": r.get("explanation") or r.get("text") or "", "error": r.get("error"),
           "model": r.get("model"), "face_track": w.face_track,
           "speech_ratio": round(float(w.speech_ratio), 3),
           "latency_s": None if now is None or not ev.analysed else round(now - w.end, 3)}
    rec.update(extra)
    return rec


def timeline_figure(records: list[dict], title: str = "labels over time"):
    """Analysed windows as points: x = window end (s), y = label. A matplotlib Figure."""
    from matplotlib.figure import Figure  # no pyplot: no global figure registry to leak

    pts = [(r["end"], r["label"] or "(no label)") for r in records if r.get("analysed")]
    cats = list(dict.fromkeys(lab for _, lab in pts))
    fig = Figure(figsize=(7, 2.4), dpi=90)
    ax = fig.add_subplot()
    if pts:
        ax.plot([t for t, _ in pts], [cats.index(lab) for _, lab in pts], "o-", ms=6, lw=1,
                color="tab:blue")
        ax.set_yticks(range(len(cats)), cats)
    ax.set_xlabel("time (s)")
    ax.set_title(title if pts else f"{title}: no analysed window yet", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


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


# ------------------------------------------------------------------ live sessions
class LiveSession:
    """One browser tab's live loop: a push source + engine + the newest results.

    Streaming handlers only push into the engine's buffers; ``refresh`` reads what
    the engine's callbacks left here. Starts on the first frame/chunk unless stopped.
    """

    def __init__(self, holder: ModelHolder, window_s: float = WINDOW_S, hop_s: float = HOP_S,
                 gate: str = "always", log_root: str | Path = "sessions") -> None:
        self.holder, self.log_root = holder, Path(log_root)
        self.window_s, self.hop_s, self.gate = window_s, hop_s, gate
        self.engine: Engine | None = None
        self.source: PushSource | None = None
        self.study: StudyLog | None = None
        self.lock = threading.RLock()
        self.run_no = 0
        self.paused = False  # Stop pressed: streams no longer auto-start the engine
        self.started_at = 0.0
        self.error = ""
        self.records: list[dict] = []
        self.latest: dict | None = None  # newest record of an analysed (or failed) window
        self.partial, self.in_flight = "", None  # explanation streaming in, its window index
        self.frame, self.faces, self.frame_no = None, [], 0
        self.arrivals: collections.deque = collections.deque(maxlen=256)  # wall times of frames
        self.frames_in = self.frames_dropped = 0
        self.audio_s, self.audio_rate = 0.0, None
        self._sent: dict = {}  # what the page shows already (refresh skips unchanged outputs)

    def __deepcopy__(self, memo):
        # gr.State deep-copies the value its factory made for a new tab; that value is
        # already fresh and holds locks/threads, so it is handed over as is.
        return self

    # -- lifecycle ---------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.engine is not None

    def start(self) -> None:
        with self.lock:
            if self.engine is not None:
                return
            self.paused, self.error = False, ""
            self.run_no += 1
            run = self.run_no
            self.source = PushSource(name="browser")
            cfg = EngineConfig(hop_s=float(self.hop_s), window_s=float(self.window_s), gate=self.gate)
            eng = Engine(self.source, lambda w: self._analyse(w, run), cfg,
                         on_frame=self._on_frame)
            eng.on_window = lambda ev: self._on_window(ev, run, eng)
            self.engine = eng
            self.started_at = time.monotonic()
            threading.Thread(target=self._run, args=(self.engine,), name=f"live-{run}",
                             daemon=True).start()

    def _run(self, engine: Engine) -> None:
        try:
            engine.run()
        except Exception as e:  # e.g. the face detector's models cannot be loaded
            self.error = f"live engine stopped: {type(e).__name__}: {e}"
            print(f"error: {self.error}", file=sys.stderr, flush=True)
        finally:
            with self.lock:
                if self.engine is engine:
                    self.engine = self.source = None

    def stop(self, pause: bool = True) -> None:
        """Stop the engine (its last window drains on its own thread)."""
        with self.lock:
            self.paused = pause
            if self.engine is not None:
                self.engine.stop()
                self.engine = self.source = None

    def restart(self) -> None:
        self.stop(pause=False)
        self.start()

    def close(self) -> None:
        self.stop()
        self.set_logging(False)

    # -- streaming inputs (fast: push only) --------------------------------------
    def push_frame(self, rgb: np.ndarray | None) -> None:
        if rgb is None:
            return
        if not self.running and not self.paused:
            self.start()
        src = self.source
        self.frames_in += 1
        self.arrivals.append(time.monotonic())
        if src is None or not src.ready.is_set():
            self.frames_dropped += 1  # engine still starting (loads VAD + detector once)
            return
        src.push_video(np.ascontiguousarray(rgb[..., :3], dtype=np.uint8))

    def push_audio(self, chunk) -> None:
        if chunk is None:
            return
        rate, samples = chunk
        samples = np.asarray(samples)
        if samples.size == 0:
            return
        if not self.running and not self.paused:
            self.start()
        self.audio_rate = int(rate)
        self.audio_s += len(samples) / float(rate)
        src = self.source
        if src is not None and src.ready.is_set():
            src.push_audio(samples, int(rate))

    # -- engine callbacks ----------------------------------------------------------
    def _analyse(self, window, run: int) -> dict:
        self.in_flight, self.partial = (run, window.index), ""

        def on_text(text: str) -> None:
            self.partial = text

        try:
            return self.holder.analyse(window, on_text=on_text)
        finally:
            self.in_flight = None

    def _on_frame(self, frame, faces) -> None:
        self.frame, self.faces = frame, list(faces)
        self.frame_no += 1

    def _on_window(self, ev: WindowEvent, run: int, engine: Engine) -> None:
        rec = window_record(ev, engine.clock.now(), run=run, source="live", plan=self.holder.plan)
        with self.lock:
            self.records.append(rec)
            if ev.analysed or ev.reason == "error":
                self.latest = rec
            study = self.study
        if study is not None and not study.closed:
            try:
                study.write(rec)
                study.save_media(f"window_{run:03d}_{ev.window.index:05d}", ev.window.frames,
                                 ev.window.audio, ev.window.audio_rate)
            except (OSError, StudyLogError) as e:
                self.error = f"study log write failed: {e}"

    # -- study log -----------------------------------------------------------------
    def set_logging(self, on: bool, participant: str = "", session: str = "",
                    keep_media: bool = False) -> str:
        """Open/close this tab's study log; returns the banner text ('' when off)."""
        with self.lock:
            if self.study is not None:
                self.study.close()
                self.study = None
            if on:
                self.study = StudyLog(self.log_root, session, participant, keep_media=keep_media)
        return self.study.banner() if self.study else ""

    # -- what the page shows ------------------------------------------------------
    def stats(self) -> dict:
        now = time.monotonic()
        recent = [t for t in self.arrivals if now - t <= FPS_SPAN_S]
        done = [r for r in self.records if r["latency_s"] is not None]
        n = collections.Counter("analysed" if r["analysed"] else (r["reason"] or "?") for r in self.records)
        try:
            import psutil

            rss = psutil.Process().memory_info().rss / 2**20
        except Exception:
            rss = float("nan")
        return {
            "frames/s in": round(len(recent) / FPS_SPAN_S, 1),
            "frames in / dropped at start": f"{self.frames_in} / {self.frames_dropped}",
            "audio in": f"{self.audio_s:.1f} s at {self.audio_rate or '–'} Hz",
            "windows analysed / gated / dropped / errors":
                f"{n['analysed']} / {n['gated']} / {n['dropped']} / {n['error']}",
            "window latency last / mean (s)": (f"{done[-1]['latency_s']:.2f} / "
                                               f"{np.mean([r['latency_s'] for r in done]):.2f}")
            if done else "–",
            "faces in view": ", ".join(f"#{f.track}" for f in self.faces) or "none",
            "model": self.holder.name,
            "plan": self.holder.plan or "none",
            "memory (process RSS / model weights)": f"{rss:.0f} MB / {self.holder.weights_mb:.0f} MB",
        }

    def warnings(self) -> list[str]:
        out = [self.error] if self.error else []
        if self.running and time.monotonic() - self.started_at > NO_MEDIA_WARN_S:
            if not self.frames_in:
                out.append("No camera frames arrive: allow camera access for this page "
                           "(browser site settings), then press Record on the webcam.")
            if not self.audio_s:
                out.append("No microphone audio arrives: allow microphone access and press "
                           "Record on the microphone (analysis goes on with video only).")
        return out


def model_banner(holder: ModelHolder) -> str:
    icon = {"ready": "✅", "loading": "⏳", "failed": "❌"}[holder.state]
    return f"{icon} **Model**: {holder.status()}"


def refresh(session: LiveSession):
    """Timer tick → (banner, faces, speech, label, explanation, timeline, stats);
    an unchanged output is skipped (nothing is sent for it)."""
    import gradio as gr

    s = session
    sent = s._sent

    def changed(key, value) -> bool:
        if sent.get(key) == value:
            return False
        sent[key] = value
        return True

    log_line = s.study.banner() if s.study else ""
    banner = "\n\n".join([model_banner(s.holder), log_line, *[f"⚠️ {w}" for w in s.warnings()]])
    banner_out = banner if changed("banner", banner) else gr.skip()
    faces_out = gr.skip()
    if s.frame is not None and changed("frame", s.frame_no):
        faces_out = draw_faces(s.frame.rgb(), s.faces)
    eng = s.engine
    if eng is None or eng.audio.total == 0:
        speech = "🎙️ microphone: no audio yet"
    else:
        speech = "🔴 **speech**" if eng.vad.in_speech else "⚪ silence"
    speech_out = speech if changed("speech", speech) else gr.skip()
    r = s.latest
    if r is None:
        label = "### –\nwaiting for the first window…"
    elif r.get("error"):
        label = f"### analysis failed\nwindow {r['index']}: `{r['error']}` (the session goes on)"
    elif not r["analysed"]:  # the model is still loading (or failed to load)
        label = f"### –\nwindow {r['index']}: {r['reason']}"
    else:
        words = ", ".join(r["labels"]) or "–"
        label = (f"### {r['label'] or '(no label)'}\n*words:* {words}  \n"
                 f"window {r['index']} · {r['start']:.1f}–{r['end']:.1f} s · "
                 f"result {r['latency_s']:.1f} s after the window")
    label_out = label if changed("label", label) else gr.skip()
    text = s.partial if s.in_flight is not None and s.partial else (r or {}).get("explanation", "")
    expl_out = text if changed("explanation", text) else gr.skip()
    timeline_out = gr.skip()
    if changed("timeline", len(s.records)):
        timeline_out = timeline_figure(s.records)
    stats = "| stat | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in s.stats().items())
    stats_out = stats if changed("stats", stats) else gr.skip()
    return banner_out, faces_out, speech_out, label_out, expl_out, timeline_out, stats_out


# ------------------------------------------------------------------ file analysis
def analyse_video(path: str | Path, holder: ModelHolder, window_s: float = WINDOW_S,
                  hop_s: float = HOP_S, gate: str = "always", study: StudyLog | None = None,
                  progress=None, on_record=None) -> list[dict]:
    """Analyse every window of a video file in order (none dropped). ``progress(frac)``
    is called as frames are decoded, ``on_record(rec)`` after each window is logged.
    Raises SourceError for an unreadable file."""
    source = FileSource(path)
    source.open()  # fail fast with a message naming the file
    duration = source.duration
    source.close()
    records: list[dict] = []

    def on_frame(frame, faces) -> None:
        if progress is not None and duration:
            progress(min(1.0, frame.t / duration))

    def on_window(ev: WindowEvent) -> None:
        rec = window_record(ev, None, source=str(path), plan=holder.plan,
                            latency_s=(ev.result or {}).get("seconds"))
        records.append(rec)
        if study is not None:
            study.write(rec)
        if on_record is not None:
            on_record(rec)

    cfg = EngineConfig(hop_s=float(hop_s), window_s=float(window_s), gate=gate, every_window=True)
    Engine(source, holder.analyse, cfg, on_frame=on_frame,
           on_window=on_window).run()
    return sorted(records, key=lambda r: r["index"])


def export_records(records: list[dict], stem: str) -> tuple[str, str]:
    """Write records as JSONL + CSV into a fresh temp folder; (jsonl path, csv path)."""
    import json

    out = Path(tempfile.mkdtemp(prefix="omni-emotion-")) / stem
    jsonl = out.with_suffix(".jsonl")
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(jsonl), str(write_csv(records, out.with_suffix(".csv")))


def file_outputs(records: list[dict], name: str):
    """(status, table rows, timeline, jsonl, csv) for the File tab."""
    rows = [[r[c] if not isinstance(r[c], list) else ", ".join(r[c]) for c in TABLE_COLUMNS]
            for r in records]
    n = sum(r["analysed"] for r in records)
    jsonl, csv_path = export_records(records, Path(name).stem or "video")
    status = f"**{name}**: {len(records)} windows, {n} analysed."
    return status, rows, timeline_figure(records, f"{name}: labels over time"), jsonl, csv_path


# ------------------------------------------------------------------------ the page
def build_ui(holder: ModelHolder, args: argparse.Namespace | None = None, startup=None):
    """The page. ``args``: defaults for settings/logging; ``startup``: a dict filled by
    a ``--video`` job (its file outputs are shown on page load)."""
    import gradio as gr

    a = args or parse_args([])
    log_root = a.log_dir
    with gr.Blocks(title="Omni-Emotion Live", analytics_enabled=False) as demo:
        gr.Markdown("# Omni-Emotion Live\nWhat emotion the person in front of the camera "
                    "shows, and why. Everything runs on this machine.")
        banner = gr.Markdown(model_banner(holder), elem_id="banner")
        session = gr.State(lambda: LiveSession(holder, a.window, a.hop, a.gate, log_root),
                           delete_callback=lambda s: s.close())
        with gr.Tab("Live"):
            with gr.Row():
                with gr.Column(scale=1):
                    cam = gr.Image(sources=["webcam"], streaming=True, type="numpy",
                                   label="Webcam", elem_id="webcam")
                    mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy",
                                   label="Microphone", elem_id="mic")
                    with gr.Row():
                        start_btn = gr.Button("Start / restart", variant="primary")
                        stop_btn = gr.Button("Stop")
                    with gr.Accordion("Settings (apply on start / restart)", open=False):
                        win = gr.Slider(1, 16, a.window, step=0.5, label="window (s)")
                        hop = gr.Slider(0.5, 8, a.hop, step=0.5, label="hop (s)")
                        gate = gr.Radio(list(GATES), value=a.gate, label="analyse windows")
                        plan = gr.Dropdown(plan_names(), value=holder.plan or "none", label="plan")
                        reload_btn = gr.Button("Reload model with this plan")
                    with gr.Accordion("Study log (opt-in)", open=bool(a.log_session)):
                        who = gr.Textbox(a.participant or "", label="participant id")
                        sid = gr.Textbox(a.log_session or "", label="session id")
                        keep = gr.Checkbox(a.keep_media, label="also store raw frames + audio")
                        log_on = gr.Checkbox(False, label=f"log this session to {log_root}/<session>.jsonl")
                        csv_btn = gr.Button("Export session CSV")
                        csv_file = gr.File(label="session CSV")
                with gr.Column(scale=2):
                    faces = gr.Image(label="Faces", elem_id="faces", interactive=False, type="numpy")
                    speech = gr.Markdown("🎙️ microphone: no audio yet", elem_id="speech")
                    label = gr.Markdown("### –\nwaiting for the first window…", elem_id="label")
                    expl = gr.Textbox(label="Explanation", lines=4, interactive=False, elem_id="explanation")
                    timeline = gr.Plot(label="Timeline", elem_id="timeline")
                    stats = gr.Markdown(elem_id="stats")
        with gr.Tab("File"):
            video = gr.File(label="Video file", file_types=["video"], type="filepath",
                            value=a.video, elem_id="video")
            go = gr.Button("Analyse", variant="primary")
            f_status = gr.Markdown(elem_id="file_status")
            table = gr.Dataframe(headers=TABLE_COLUMNS, elem_id="table", wrap=True)
            f_plot = gr.Plot(label="Timeline", elem_id="file_timeline")
            with gr.Row():
                f_jsonl, f_csv = gr.File(label="JSONL"), gr.File(label="CSV")

        quiet = dict(show_progress="hidden", concurrency_limit=None, api_visibility="private")
        cam.stream(lambda f, s: s.push_frame(f), [cam, session], [], stream_every=STREAM_EVERY_S, **quiet)
        mic.stream(lambda c, s: s.push_audio(c), [mic, session], [], stream_every=STREAM_EVERY_S, **quiet)
        gr.Timer(REFRESH_S).tick(refresh, [session], [banner, faces, speech, label, expl, timeline, stats],
                                 **quiet)

        def on_start(w, h, g, s):
            s.window_s, s.hop_s, s.gate = w, h, g
            s.restart()

        def on_logging(on, p, sess, km, s):
            try:
                s.set_logging(on, p, sess, km)
            except StudyLogError as e:
                gr.Warning(str(e))
                return False
            return on

        def on_csv(s):
            if s.study is None:
                raise gr.Error("Study logging is off: tick 'log this session' first.")
            return str(s.study.export_csv())

        def on_reload(p):
            holder.start(plan=p)

        start_btn.click(on_start, [win, hop, gate, session], [], api_visibility="private")
        stop_btn.click(lambda s: s.stop(), [session], [], api_visibility="private")
        log_on.input(on_logging, [log_on, who, sid, keep, session], [log_on], api_visibility="private")
        csv_btn.click(on_csv, [session], [csv_file], api_visibility="private")
        reload_btn.click(on_reload, [plan], [], api_visibility="private")

        def analyse_file(path, window_s, hop_s, gate_policy, progress=gr.Progress()):
            """Analyse a video file window by window → status, table, timeline, JSONL, CSV."""
            if not path:
                raise gr.Error("Upload a video file first.")
            progress(0.0, desc="decoding + analysing")
            try:
                records = analyse_video(path, holder, window_s, hop_s, gate_policy,
                                        progress=lambda f: progress(f, desc="analysing"))
            except SourceError as e:
                raise gr.Error(f"Cannot analyse this upload: {e}") from None
            return file_outputs(records, Path(path).name)

        go.click(analyse_file, [video, win, hop, gate], [f_status, table, f_plot, f_jsonl, f_csv],
                 api_name="analyse_file")

        def on_load(s):
            if a.log_session and a.participant:
                s.set_logging(True, a.participant, a.log_session, a.keep_media)
            done = (startup or {}).get("outputs")
            on = s.study is not None
            if done is None:
                msg = (startup or {}).get("status", "")
                return on, msg, gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return on, *done

        demo.load(on_load, [session], [log_on, f_status, table, f_plot, f_jsonl, f_csv],
                  api_visibility="private")
    return demo


def run_startup_video(holder: ModelHolder, args, startup: dict) -> None:
    """--video: analyse the file once the model is in; log it when --log-session is given."""
    startup["status"] = f"analysing {args.video} in the background…"
    if holder.thread is not None:
        holder.thread.join()
    study = None
    try:
        if args.log_session:
            study = StudyLog(args.log_dir, args.log_session, args.participant, args.keep_media)
        records = analyse_video(args.video, holder, args.window, args.hop, args.gate, study=study,
                                on_record=lambda r: print(f"logged window {r['index']}", flush=True))
        startup["outputs"] = file_outputs(records, Path(args.video).name)
        print(f"analysed {args.video}: {len(records)} windows", flush=True)
    except (SourceError, OSError, StudyLogError) as e:
        startup["status"] = f"❌ cannot analyse {args.video}: {e}"
        print(f"error: {startup['status']}", file=sys.stderr, flush=True)
    finally:
        if study is not None:
            study.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python app.py", description="Omni-Emotion Live web page")
    p.add_argument("--model", help="checkpoint folder, hub id, or 'tiny' (the built-in random "
                   "model); default: the 0.5b preset composed from public weights")
    p.add_argument("--plan", help=f"precision plan (quant/): {', '.join(plan_names()[1:]) or 'none yet'}")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N (auto: cuda if available)")
    p.add_argument("--max-new-tokens", type=int, default=96, help="generation budget per window")
    p.add_argument("--host", default=HOST, help="address to bind (default: local only)")
    p.add_argument("--port", type=int, default=PORT)
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    p.add_argument("--video", help="analyse this file at start (shown in the File tab)")
    p.add_argument("--window", type=float, default=WINDOW_S, help="s per window")
    p.add_argument("--hop", type=float, default=HOP_S, help="s between windows")
    p.add_argument("--gate", choices=GATES, default="always", help="which windows to analyse")
    p.add_argument("--log-session", help="study log session id (turns logging on)")
    p.add_argument("--participant", help="study participant id (with --log-session)")
    p.add_argument("--log-dir", default="sessions", help="folder of study logs")
    p.add_argument("--keep-media", action="store_true", help="store raw frames + audio in logs")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if bool(args.log_session) != bool(args.participant):
        print("error: --log-session and --participant go together", file=sys.stderr)
        return 2
    try:
        if args.log_session:
            check_id("session", args.log_session), check_id("participant", args.participant)
    except StudyLogError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.video and not Path(args.video).is_file():
        print(f"error: --video file not found: {args.video}", file=sys.stderr)
        return 2
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    holder = ModelHolder(args.model, args.plan, args.device, args.max_new_tokens, plan_loader=load_with_plan)
    holder.start()
    startup: dict = {}
    if args.video:
        threading.Thread(target=run_startup_video, args=(holder, args, startup), daemon=True).start()
    demo = build_ui(holder, args, startup)
    theme = __import__("gradio").themes.Default(font=["system-ui", "sans-serif"],
                                                font_mono=["ui-monospace", "monospace"])
    # system fonts: the page makes no request outside this machine
    demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share,
                        show_error=True, theme=theme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
