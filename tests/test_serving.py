"""The page's served model (`model.serve.serving.ModelHolder`): every analyser, the
default composed from hub parts included, comes from `model.serve.loader.load_analyser`;
``analyse(window, on_partial)`` streams the answer with its parse."""
from __future__ import annotations

import pytest

import model.checkpoint.loading as loading
import model.serve.serving as serving
from model.checkpoint.loading import build_tiny
from model.net.answers import ParsedAnswer, parse_answer
from model.net.presets import HUB_SOURCES
from model.serve.loader import Composed, load_analyser
from model.serve.serving import ModelHolder
from tests.test_stream_reuse import window

JOIN_S = 120.0  # s a background load may take on a loaded 2-core machine


@pytest.fixture
def hub(monkeypatch):
    """A reachable hub whose snapshots are folders named after the repo, and a
    `compose_from_pretrained` that records its parts and gives the tiny model."""
    calls = {"fetch": [], "compose": []}
    monkeypatch.setattr(serving, "hub_reachable", lambda: (True, ""))
    monkeypatch.setattr(serving, "fetch", lambda repo, online: calls["fetch"].append(repo) or f"/snap/{repo}")

    def compose(preset, base, audio, face):
        calls["compose"].append((preset, base, audio, face))
        return build_tiny()
    monkeypatch.setattr(loading, "compose_from_pretrained", compose)
    return calls


def test_the_default_is_composed_through_the_one_loader(hub):
    holder = ModelHolder(None, max_new_tokens=4)
    holder.start().join(JOIN_S)
    assert holder.state == "ready", holder.message
    src = HUB_SOURCES["0.5b"]
    assert hub["fetch"] == [src["base"], src["audio"]]
    assert hub["compose"] == [("0.5b", f"/snap/{src['base']}", f"/snap/{src['audio']}", None)]
    a = holder.analyser
    assert (a.name, a.use_faces, a.use_audio, a.max_new_tokens) == ("omni-emotion-0.5b", False, False, 4)
    assert holder.name == "omni-emotion-0.5b (composed)" and not holder.untrained and "missing" in holder.note


def test_a_plan_for_the_default_fails_before_any_download(hub):
    holder = ModelHolder(None, plan="nf4", plan_loader=lambda *a: None)
    holder.start().join(JOIN_S)
    assert holder.state == "failed" and "needs a checkpoint folder" in holder.message
    assert hub["fetch"] == [] and hub["compose"] == []
    with pytest.raises(ValueError, match="needs a checkpoint folder"):  # the loader refuses it too
        load_analyser(Composed("0.5b", "b", "a"), "nf4")


def test_the_holder_streams_the_answer_with_its_parse():
    holder = ModelHolder("tiny", max_new_tokens=6)
    holder.start().join(JOIN_S)
    assert holder.state == "ready" and holder.untrained
    partials = []
    result = holder.analyse(window(0), on_partial=lambda text, parsed: partials.append((text, parsed)))
    assert partials and all(isinstance(p, ParsedAnswer) and p == parse_answer(t) for t, p in partials)
    assert result["text"].startswith(partials[-1][0])
