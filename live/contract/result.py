"""The result of analysing one window: the shape every analyser returns (the model,
the stand-ins, the pool), every log records and the page draws."""
from __future__ import annotations

from typing import NotRequired, TypedDict


class Result(TypedDict):
    """What every analyser returns for one window: a plain JSON-able dict. Build it
    with ``make_result`` so that every field is present.

    label:        the emotion label (e.g. "happy"); None when there is none.
    labels:       open-vocabulary emotion words (e.g. ["cheerful", "relaxed"]); may be [].
    explanation:  why: the face, voice and scene cues; "" when none.
    text:         the model's whole raw answer, before parsing; "" for stand-ins.
    model:        name of the model (or stand-in) that produced the result.
    pending:      set when no model could run yet (loading, failed to load): why;
                  such a window counts as not analysed (reason "pending").
    error:        set (by the engine) when the analyser raised: "<Type>: <message>".

    Model diagnostics, present only in ``model.serve.analyser.OmniEmotionAnalyser``'s
    results: ``tokens`` ({"visual", "face", "audio", "text", "generated"} counts),
    ``face_frames`` (frames with a real face crop), ``audio`` ("present"|"absent"),
    ``seconds`` (s the model took, generation included).
    """

    label: str | None
    labels: list[str]
    explanation: str
    text: str
    model: str | None
    pending: str | None
    error: str | None
    tokens: NotRequired[dict]
    face_frames: NotRequired[int]
    audio: NotRequired[str]
    seconds: NotRequired[float]


def make_result(label: str | None = None, labels=(), explanation: str = "", text: str = "",
                model: str | None = None, pending: str | None = None, error: str | None = None,
                **diagnostics) -> Result:
    """A ``Result`` with every field present (``diagnostics``: the model's optional ones)."""
    return Result(label=label, labels=list(labels), explanation=explanation or "", text=text or "",
                  model=model, pending=pending, error=error, **diagnostics)
