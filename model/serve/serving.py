"""The served model of the app: loaded on a background thread, with the default
(the 0.5b preset composed from public checkpoints) falling back to the tiny random
model when the hub cannot be reached, and saying why.

Import-light: torch, transformers and the hub client load inside the loader thread.
Every analyser comes from `model.serve.loader.load_analyser`; precision plans come in
through `plan_loader` (the app names `quant:load_model`, imported on first use).
"""
from __future__ import annotations

import logging
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from live.contract.result import Result, make_result
from live.contract.cli import one_line
from model.serve.generate import ANALYSIS_MAX_NEW_TOKENS

log = logging.getLogger(__name__)

HUB_PROBE_S = 3.0  # s to wait for a TCP connection to the model hub
UNTRAINED = "untrained — outputs are not meaningful"
BUILD_ADVICE = ("to analyse for real, build a checkpoint where the hub is reachable: "
                "`python -m model.checkpoint.build --preset 0.5b --from-pretrained --out DIR`, "
                "copy DIR here and start with `--model DIR`")
COMPOSED_NOTE = ("real LLaVA-OneVision-0.5B weights; the audio and face branches are fed as missing "
                 "modalities until trained projector weights are given (--model DIR)")
SNAPSHOT_FILES = ["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model", "tokenizer*"]


def fetch(repo: str, online: bool) -> str:
    """The local snapshot folder of hub ``repo`` (the cache only when not ``online``)."""
    from huggingface_hub import snapshot_download

    return snapshot_download(repo, allow_patterns=SNAPSHOT_FILES, local_files_only=not online)


def hub_reachable(timeout_s: float = HUB_PROBE_S) -> tuple[bool, str]:
    """(reachable, why not), checked once: offline mode, or a TCP connect to the hub
    endpoint. The whole probe (name lookup included) gives up after ``timeout_s``."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False, "HF_HUB_OFFLINE is set"
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    answer: list[tuple[bool, str]] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            answer.append((True, ""))
        except OSError as e:
            # strerror, not str(e): "[Errno -2] Name or service not known" is no message for a user
            answer.append((False, f"cannot connect to {host}:{port} ({e.strerror or type(e).__name__})"))

    t = threading.Thread(target=probe, name="hub-probe", daemon=True)
    t.start()
    t.join(timeout_s)  # a hanging DNS lookup is not bounded by the socket timeout
    return answer[0] if answer else (False, f"no answer from {host}:{port} within {timeout_s:g} s")


class ModelHolder:
    """The app's one model, loaded on a background thread, shared by all page sessions.

    ``spec``: None (the default: the 0.5b preset composed from public parts, falling
    back to the tiny model), "tiny", a local folder or a hub id. ``analyse(window,
    on_partial)`` serves whatever is loaded (one call at a time) or a pending result.
    Fits ``live.page.session.ModelServer``.
    """

    def __init__(self, spec: str | None = None, plan: str | None = None, device: str = "cpu",
                 max_new_tokens: int = ANALYSIS_MAX_NEW_TOKENS, plan_loader: Callable | str | None = None) -> None:
        self.spec, self.plan, self.device, self.max_new_tokens = spec, plan, device, max_new_tokens
        self.plan_loader = plan_loader
        self.analyser = None
        self.name, self.state, self.message, self.note = "(none yet)", "loading", "", ""
        self.untrained = False
        self.weights_mb = 0.0
        self._run_lock = threading.Lock()
        self.thread: threading.Thread | None = None

    @classmethod
    def ready(cls, analyser, name: str = "test", note: str = "") -> "ModelHolder":
        """A holder around an already built analyser (tests, scripts)."""
        h = cls("given")
        h.analyser, h.name, h.state, h.note = analyser, name, "ready", note
        return h

    def start(self, plan: str | None = None) -> threading.Thread:
        """(Re)load on a background thread; the current model serves until the new one is in."""
        if plan is not None:
            self.plan = None if plan == "none" else plan
        self.state, self.message = "loading", f"loading {self.spec or 'the default 0.5b model'}…"
        self.thread = threading.Thread(target=self._load, name="model-load", daemon=True)
        self.thread.start()
        return self.thread

    def _load(self) -> None:
        from model.serve.loader import load_analyser

        try:
            spec, name, note = self._spec()
            a = load_analyser(spec, self.plan, self.device, self.plan_loader, self.max_new_tokens)
            self._set(a, name, note, untrained=spec == "tiny")
            self.message = ""
            print(f"model: {self.status()}", flush=True)
        except Exception as e:  # a failed load must not take the page down
            self.state = "failed"
            self.message = f"model {self.spec or 'default'} failed to load: {type(e).__name__}: {one_line(e)}"
            log.debug("model load failed", exc_info=e)  # the traceback: log file only
            print(f"error: {self.message}", file=sys.stderr, flush=True)

    def _set(self, analyser, name: str, note: str = "", untrained: bool = False) -> None:
        model = analyser.model
        self.weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
        self.analyser, self.name, self.note, self.state = analyser, name, note, "ready"
        self.untrained = untrained  # random weights: the page's banner warns instead of ✅

    def _spec(self) -> tuple:
        """(`load_analyser` spec, name shown, note), hub parts fetched first: a hub id's
        snapshot, or the default's composed parts (the tiny model when they cannot be)."""
        from model.net.presets import HUB_SOURCES
        from model.serve.loader import Composed, refuse_plan_for_composed

        if self.spec == "tiny":
            return "tiny", f"tiny ({UNTRAINED})", ""
        if self.spec is not None:
            path = Path(self.spec)
            if not path.is_dir():
                self.message = f"fetching {self.spec}…"
                path = Path(fetch(self.spec, hub_reachable()[0]))
            return path, path.name, ""
        refuse_plan_for_composed(self.plan)  # before any download
        src, (online, why) = HUB_SOURCES["0.5b"], hub_reachable()
        try:
            self.message = f"fetching {src['base']} and {src['audio']} (first run downloads them)…"
            parts = [fetch(src[k], online) for k in ("base", "audio")]
        except Exception as e:
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            log.info("default model not fetched", exc_info=e)  # the log file gets the traceback
            cause = f"hub unreachable: {why}" if not online else reason
            return "tiny", f"tiny ({UNTRAINED})", f"the default 0.5b model could not be fetched ({cause}); {BUILD_ADVICE}"
        self.message = "composing the 0.5b model…"
        return Composed("0.5b", *parts), "omni-emotion-0.5b (composed)", COMPOSED_NOTE

    def analyse(self, window, on_partial=None) -> Result:
        """The served model's result, or (no model yet, or it failed to load) an empty
        result whose ``pending`` says why. ``on_partial(text, parsed)``: the answer as it
        grows (`model.serve.analyser.OmniEmotionAnalyser.analyse`)."""
        a = self.analyser
        if a is None:
            return make_result(pending=self.status())
        with self._run_lock:  # one generation at a time: the CPU/GPU is shared anyway
            return a(window, on_partial=on_partial)

    def status(self) -> str:
        if self.state == "failed":
            return self.message
        if self.analyser is None:
            return self.message or "loading…"
        return f"{self.name}" + (f" — {self.note}" if self.note else "")
