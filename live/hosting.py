"""How the page is served: who may reach it, and where its errors go.

Access: the page binds to loopback; any other address, or a public share link, needs a
login (Gradio's own auth), read from a file of ``user:password`` lines or from
``$OMNI_EMOTION_AUTH``. Errors: one line per event on stderr, full tracebacks (once per
distinct error) in a log file; a client that went away mid-request is not an error.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import sys
from pathlib import Path

from .cli import CliError, one_line

AUTH_ENV = "OMNI_EMOTION_AUTH"  # "user:password": the login when not bound to loopback
LOG_FILE = "runs/app.log"  # full tracebacks go here (stderr gets one line each)
QUIET_LOGGERS = ("httpx", "httpcore", "urllib3", "matplotlib", "PIL")  # INFO chatter

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
