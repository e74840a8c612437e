"""The page handlers' boundary: every handler wrapped by ``guard`` (an unexpected error
is one line for the client and the log, its traceback in ``--log-file`` only), a user's
mistake raised as ``user_error``, and what a client sent checked before acting
(``check_text``, ``check_settings``): a client can send anything, not only what the
page's widgets make. ``PRIVATE`` events are the page's own, not part of the API.
Gradio is imported on first use.
"""
from __future__ import annotations

import functools
import html
import logging

from live.contract.cli import one_line
from live.contract.media import check_window
from live.study_log import short
from live.window import GATES

TEXT_MAX_CHARS = 200  # ids and texts a client sends are refused above this length
PRIVATE = dict(api_visibility="private")  # page-only events: not part of the API
QUIET = dict(show_progress="hidden", concurrency_limit=None, **PRIVATE)  # streams and timers

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


def with_request(*fns) -> None:
    """Gradio passes these handlers' ``request`` parameter the caller's ``gr.Request``."""
    import gradio as gr

    for fn in fns:
        fn.__annotations__ = {"request": gr.Request}


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
