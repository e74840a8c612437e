"""The labels-first explanation policy (`explain_every_s`): once a window's labels are
out, go on to the explanation only when the label differs from the stream's last one or
its last explanation is at least ``every_s`` seconds (window clock) old. None: every
window explains. The memory is the stream's (`model.serve.streams.StreamState`)."""
from __future__ import annotations

from collections.abc import Callable

from model.net.answers import ParsedAnswer
from model.serve.streams import StreamState


class ExplainPolicy:
    """``wants(stream, at)``: the question `model.serve.generate.AnswerTracker` asks once
    a row's labels are parsed; ``remember``: the stream's memory after the window."""

    def __init__(self, every_s: float | None = None):
        if every_s is not None and every_s < 0:
            raise ValueError(f"explain_every_s must be >= 0 or None, got {every_s}")
        self.every_s = every_s

    def wants(self, stream: StreamState, at: float | None) -> Callable[[ParsedAnswer], bool]:
        """Whether a window of ``stream`` at ``at`` (None: no clock) goes on to explain."""
        if self.every_s is None:
            return lambda parsed: True

        def explain(parsed: ParsedAnswer) -> bool:
            due = at is None or stream.explained_at is None or at - stream.explained_at >= self.every_s
            return parsed.label != stream.last_label or due
        return explain

    @staticmethod
    def remember(stream: StreamState, at: float | None, parsed: ParsedAnswer, closed: bool, explained: bool) -> None:
        """A window whose label list ``closed``: its label, and ``at`` if it ``explained``."""
        if closed:
            if explained:
                stream.explained_at = at
            stream.last_label = parsed.label
