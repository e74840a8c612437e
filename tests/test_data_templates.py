"""The paper's instruction templates and answer formats."""
import random

import pytest

from model.net import templates as T


def test_phase1_pools_and_typo_fixed():
    assert len(T.AUDIO_CAPTION_INSTRUCTIONS) + len(T.ASR_INSTRUCTIONS) == 9
    assert "Please transcribe the speech into a written format." in T.ASR_INSTRUCTIONS
    assert not any(s.startswith("lease") for s in T.ASR_INSTRUCTIONS)
    rng = random.Random(1)
    assert {T.audio_instruction("asr", rng) for _ in range(200)} == set(T.ASR_INSTRUCTIONS)
    assert {T.audio_instruction("audio_caption", rng) for _ in range(200)} == set(
        T.AUDIO_CAPTION_INSTRUCTIONS)
    with pytest.raises(ValueError):
        T.audio_instruction("emotion_cls", rng)


def test_classification_prompt_shuffles_options_and_round_trips():
    rng = random.Random(0)
    orders = set()
    for _ in range(50):
        prompt, shown = T.classification_prompt(T.DFEW_CLASSES, rng)
        assert sorted(shown) == sorted(T.DFEW_CLASSES)
        assert prompt.endswith(", ".join(shown) + ".")
        assert any(prompt.startswith(q) for q in T.CLASSIFICATION_QUESTIONS)
        assert T.options_from_prompt(prompt) == shown
        orders.add(tuple(shown))
    assert len(orders) > 40  # 7! orders: repeats would mean no shuffling
    assert T.options_from_prompt("Describe the audio.") is None
    with pytest.raises(ValueError):
        T.classification_prompt(["happy", "happy"], rng)
    with pytest.raises(ValueError):
        T.classification_prompt(["happy"], rng)


def test_paper_example_prompt_shape():
    # §4.4: "... exhibited by the characters? surprise, neutral, ... disgust." → "neutral."
    rng = random.Random(3)
    prompts = {T.classification_prompt(["a", "b"], rng)[0].split("?")[0] + "?" for _ in range(100)}
    assert T.CLASSIFICATION_QUESTIONS[0] in prompts
    assert T.classification_answer(" neutral ") == "neutral."


def test_reasoning_answer_format():
    assert T.reasoning_answer("He  shouts", ["Angry", "tense."]) == (
        "He shouts. Open-vocabulary labels: angry, tense.")
    with pytest.raises(ValueError):
        T.reasoning_answer("x", [])
    with pytest.raises(ValueError):
        T.reasoning_answer("x", ["a, b"])
    with pytest.raises(ValueError):
        T.reasoning_answer("  ", ["a"])


def test_caption_answer():
    assert T.caption_answer("people  marching") == "People marching."
    assert T.caption_answer("Is it?") == "Is it?"
    with pytest.raises(ValueError):
        T.caption_answer(" ")
