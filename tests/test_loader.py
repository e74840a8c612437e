"""The one analyser loader (`model.serve.loader.load_analyser`): the page, live.run,
infer and the pool's replicas all load through it (issue 19, item 3)."""
import pytest
import torch

from model.serve.generate import TINY_MAX_NEW_TOKENS
from model.serve.loader import load_analyser, plan_loader

CALLS: list = []


def recording_loader(path, plan, device):
    """A `Loader` that loads as saved and records its call (named by string below)."""
    from model.checkpoint.loading import load

    CALLS.append((str(path), plan, device))
    return load(path, device=device)


def test_plan_without_loader_fails_loudly():
    with pytest.raises(ValueError, match="needs a loader"):
        load_analyser("tiny", plan="fp16")
    assert plan_loader(None, None) is None  # no plan: nothing to apply


def test_tiny_caps_the_answer_and_is_named():
    a = load_analyser("tiny", max_new_tokens=10_000)
    assert a.max_new_tokens == TINY_MAX_NEW_TOKENS and a.name == "tiny"


def test_folder_loads_as_saved_or_through_a_named_loader(tiny_checkpoint):
    plain = load_analyser(tiny_checkpoint, max_new_tokens=5, prompt="p")
    assert plain.name == tiny_checkpoint.name and plain.prompt == "p" and plain.max_new_tokens == 5
    CALLS.clear()
    planned = load_analyser(tiny_checkpoint, "some-plan", "cpu", "tests.test_loader:recording_loader")
    assert CALLS == [(str(tiny_checkpoint), "some-plan", "cpu")]
    for p, q in zip(plain.model.parameters(), planned.model.parameters()):
        assert torch.equal(p, q)  # the same weights either way


def test_tiny_with_a_plan_goes_through_a_folder():
    CALLS.clear()
    a = load_analyser("tiny", "some-plan", "cpu", recording_loader, max_new_tokens=4)
    assert len(CALLS) == 1 and CALLS[0][1:] == ("some-plan", "cpu")
    assert a.name == "tiny" and a.max_new_tokens == 4
