"""How the page is served: who may reach it, where its errors go, and where Gradio
may put files.

Access (loopback, else a login: ``check_exposure``, ``read_auth``), errors (one line on
stderr, tracebacks in the log file: ``setup_logging``), Gradio's temporary files (a
folder of this process, removed at exit: ``private_temp_dir``, ``sweep_temp``) and
memory (``limit_malloc``, ``release_memory``): docs/app.md "Security and errors" and
"Privacy".
"""
from __future__ import annotations

import atexit
import ctypes
import gc
import ipaddress
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from live.contract.cli import CliError, one_line

AUTH_ENV = "OMNI_EMOTION_AUTH"  # "user:password": the login when not bound to loopback
LOG_FILE = "runs/app.log"  # full tracebacks go here (stderr gets one line each)
QUIET_LOGGERS = ("httpx", "httpcore", "urllib3", "matplotlib", "PIL")  # INFO chatter
TEMP_ENV = "GRADIO_TEMP_DIR"  # where Gradio writes uploads, stream chunks, served files
TEMP_PREFIX = "omni-emotion-gradio-"  # + "<pid>-<random>": one folder per app process
# Gradio's stream queue drops a microphone chunk it uploaded when a newer one arrives
# before it was handled: nobody reads (or deletes) that file. Swept after this age.
STREAM_LEFTOVER_AGE_S = 15.0  # s; a handled chunk is read and deleted within a second
STREAM_SUFFIXES = (".wav", ".webm", ".ogg", ".mp3", ".m4a", ".flac", ".png", ".jpg", ".jpeg", ".webp")
UPLOAD_MAX_AGE_S = 3600.0  # s an upload never analysed (and a served export copy) is kept
SWEEP_EVERY_S = 5.0  # s between sweeps
M_ARENA_MAX = -8  # glibc mallopt() parameter number
MALLOC_ARENAS = 2  # glibc malloc arenas (default: 8 per core), see limit_malloc()

log = logging.getLogger("app")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_auth(auth_file: str | None) -> list[tuple[str, str]]:
    """Logins from ``auth_file`` (one user:password a line; blank and # lines skipped)
    or ``$OMNI_EMOTION_AUTH``; [] when neither is given. CliError for a bad one (the
    message never repeats a password)."""
    if auth_file:
        try:
            text = Path(auth_file).read_text(encoding="utf-8")
        except OSError as e:
            raise CliError(f"--auth-file {auth_file}: cannot read it ({e.strerror})") from None
        lines = [(i, x.strip()) for i, x in enumerate(text.splitlines(), 1)]
        lines = [(i, x) for i, x in lines if x and not x.startswith("#")]
        where = lambda i: f"--auth-file {auth_file}, line {i}"  # noqa: E731
    else:
        env = os.environ.get(AUTH_ENV, "").strip()
        lines = [(0, env)] if env else []
        where = lambda i: f"${AUTH_ENV}"  # noqa: E731
    out = []
    for i, line in lines:
        user, sep, password = line.partition(":")
        if not sep or not user.strip() or not password:
            raise CliError(f"{where(i)}: expected user:password with a non-empty user and password")
        out.append((user.strip(), password))
    if auth_file and not out:
        raise CliError(f"--auth-file {auth_file}: no user:password line in it")
    return out


def check_exposure(host: str, share: bool, auth: list) -> None:
    """CliError when the page would be reachable from other machines without a login."""
    exposed = [o for o, on in ((f"--host {host}", not is_loopback(host)), ("--share", share)) if on]
    if exposed and not auth:
        raise CliError(f"{' and '.join(exposed)} makes the page reachable from other machines: "
                       f"give a login with --auth-file FILE (user:password lines) or ${AUTH_ENV}")


class ServerErrors(logging.Filter):
    """On uvicorn's error logger: "Exception in ASGI application" becomes one line (its
    traceback goes to the log file, once per distinct error); a client that went away
    mid-request (a closed tab, a cancelled upload) is a line in the log file only."""

    GONE = ("ClientDisconnect", "CancelledError", "ConnectionResetError", "BrokenPipeError")

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or record.exc_info[1] is None:
            return True
        exc = record.exc_info[1]
        what = f"{type(exc).__name__}: {one_line(exc)}"
        if type(exc).__name__ in self.GONE:
            log.info("client disconnected (%s)", what)
            return False
        first = what not in self.seen
        self.seen.add(what)
        log.info("server error: %s", what, exc_info=record.exc_info if first else None)
        record.msg, record.args = f"{one_line(record.getMessage())}: {what}", ()
        record.exc_info, record.exc_text = None, None
        return True


class OneLine(logging.Formatter):
    """``<level>: <first line of the message>``: no traceback (those go to the log file)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {one_line(record.getMessage())}"


def setup_logging(log_file: str | Path) -> None:
    """Warnings and errors as one line each on stderr; everything from INFO up, with
    full tracebacks, appended to ``log_file``."""
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(log_file, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    to_err = logging.StreamHandler(sys.stderr)
    to_err.setLevel(logging.WARNING)
    to_err.setFormatter(OneLine())
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(to_file)
    root.addHandler(to_err)
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").addFilter(ServerErrors())  # kept by uvicorn's dictConfig


def check_port(host: str, port: int) -> None:
    """CliError (one line, advising --port) when ``host:port`` cannot be bound: checked
    before the model loads, instead of Gradio's traceback after it."""
    if not 1 <= port <= 65535:
        raise CliError(f"--port {port} is not a port number (1-65535)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            s.bind((host, port))
        except OSError as e:
            raise CliError(f"cannot listen on {host}:{port} ({e.strerror or e}): another program "
                           f"uses it; choose another port with --port N") from None


def private_temp_dir() -> Path:
    """A folder for Gradio's temporary files of this process alone: made 0700 under
    ``$GRADIO_TEMP_DIR`` (or the system temp dir), set as ``$GRADIO_TEMP_DIR``, removed
    at exit (SIGTERM included, see ``exit_on_sigterm``). Folders a killed app process
    of this user left are removed first. Call before gradio is imported."""
    base = Path(os.environ.get(TEMP_ENV) or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    for old in base.glob(f"{TEMP_PREFIX}*"):
        pid = old.name[len(TEMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and old.is_dir() and old.stat().st_uid == os.getuid() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=base))  # 0700
    os.environ[TEMP_ENV] = str(path)
    atexit.register(shutil.rmtree, path, True)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def exit_on_sigterm() -> None:
    """SIGTERM (a service manager, ``kill``) exits like Ctrl-C: ``atexit`` runs (the
    temp folder is removed, logs are closed)."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def sweep_temp(now: float | None = None) -> int:
    """Delete what Gradio left in ``$GRADIO_TEMP_DIR``: stream chunks (audio or picture
    files) older than STREAM_LEFTOVER_AGE_S, any other file older than
    UPLOAD_MAX_AGE_S, and emptied folders. Returns the number of files deleted."""
    temp = os.environ.get(TEMP_ENV)
    if not temp or not Path(temp).is_dir():
        return 0
    now = time.time() if now is None else now
    n = 0
    # a list first, by os.walk (which skips folders deleted meanwhile by their handlers)
    files = [Path(d) / f for d, _, names in os.walk(temp) for f in names]
    for p in files:
        try:
            limit = STREAM_LEFTOVER_AGE_S if p.suffix.lower() in STREAM_SUFFIXES else UPLOAD_MAX_AGE_S
            if now - p.stat().st_mtime > limit:
                discard_upload(p)
                n += 1
        except OSError:  # deleted meanwhile by its handler
            continue
    return n


def start_sweeper() -> threading.Thread:
    """``sweep_temp`` every SWEEP_EVERY_S on a daemon thread."""
    def loop() -> None:
        while True:
            time.sleep(SWEEP_EVERY_S)
            try:
                n = sweep_temp()
            except Exception as e:  # never stop sweeping
                log.warning("sweeping Gradio's temp folder failed: %s", one_line(e))
                continue
            if n:
                log.info("deleted %d file(s) Gradio left in its temp folder", n)

    t = threading.Thread(target=loop, name="temp-sweeper", daemon=True)
    t.start()
    return t


def discard_upload(path: str | Path) -> bool:
    """Delete a file Gradio stored in ``$GRADIO_TEMP_DIR`` (an upload, a microphone
    chunk) and its folder when empty; a path anywhere else is left alone (the
    operator's own ``--video``). True when deleted."""
    temp = os.environ.get(TEMP_ENV)
    if not temp or not path:
        return False
    p = Path(path).resolve()
    if Path(temp).resolve() not in p.parents:
        return False
    p.unlink(missing_ok=True)
    if p.parent != Path(temp).resolve():
        try:
            p.parent.rmdir()  # Gradio puts each file in a folder of its own
        except OSError:  # not empty
            pass
    return True


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return None


def limit_malloc() -> None:
    """Cap glibc's malloc arenas (call once, at start). A web server runs requests on
    many worker threads; every thread that decoded frames got its own arena, and freed
    frames stayed mapped in each: the app's RSS grew ~80 MB per file analysis
    (bench/soak.py)."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, MALLOC_ARENAS)


def release_memory() -> None:
    """After a file analysis or a closed tab: collect the cycles its engine left
    (callbacks referring back to their owners) and hand freed heap pages back."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
