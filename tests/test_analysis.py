"""Parsing generated answers back into label / labels / explanation."""
import random

import pytest

from model.net.answers import match_option, parse_answer, split_explanation, split_labels
from model.net.templates import (
    DFEW_CLASSES, MAFW_CLASSES, classification_answer, classification_prompt, reasoning_answer,
)


def test_round_trip_reasoning_answer():
    expl = "The man frowns and his voice trembles while he talks about the exam."
    text = reasoning_answer(expl, ["Worried", "tense", "looking forward to", "worried"])
    assert text.endswith("Open-vocabulary labels: worried, tense, looking forward to.")
    p = parse_answer(text)
    assert p.explanation == expl
    assert p.labels == ["worried", "tense", "looking forward to"]
    assert p.label == "worried"


def test_round_trip_classification_answer_for_every_class():
    rng = random.Random(0)
    for classes in (DFEW_CLASSES, MAFW_CLASSES):
        for c in classes:
            _, shown = classification_prompt(classes, rng)
            assert parse_answer(classification_answer(c), shown).label == c


def test_word_forms_map_to_the_offered_spelling():
    assert parse_answer("Anger.", DFEW_CLASSES).label == "angry"
    assert parse_answer("happy", MAFW_CLASSES).label == "happiness"
    assert parse_answer("The speaker sounds anxious.", ["anxiety", "neutral"]).label == "anxiety"
    assert parse_answer("helpless", ["helplessness", "sadness"]).label == "helplessness"


def test_labels_before_explanation_and_earliest_mention():
    text = "She smiles at first but then cries. Open-vocabulary labels: sad, moved."
    assert parse_answer(text, ["happy", "sad"]).label == "sad"  # the label list wins
    # no list: the option mentioned first
    assert parse_answer("He looks sad, not happy at all", ["happy", "sad"]).label == "sad"
    assert match_option("a pleasant surprise", ["surprise", "happy"]) == "surprise"
    assert match_option("unhappy", ["happy"]) is None  # whole words only


def test_nothing_recognised_is_none_not_a_guess():
    p = parse_answer("I cannot tell from this video what is going on here today.", DFEW_CLASSES)
    assert p.label is None and p.labels == []
    assert parse_answer("", DFEW_CLASSES).label is None
    with pytest.raises(ValueError):
        parse_answer(None)


def test_bare_lists_and_marker_variants():
    assert parse_answer("worried, tense and sad").labels == ["worried", "tense", "sad"]
    assert parse_answer("Neutral.").label == "neutral"
    e, labels = split_explanation("Calm voice.\nopen vocabulary labels: calm; relaxed\nThanks.")
    assert (e, labels) == ("Calm voice.", ["calm", "relaxed"])
    assert split_labels("['Happy', 'Excited']") == ["happy", "excited"]
    # a long sentence is not a label list
    assert parse_answer("The person looks quite sad and tired, perhaps after a long day.").labels == []


def test_labels_closed_once_the_list_has_a_label_and_its_end():
    closed = {text: parse_answer(text).labels_closed for text in [
        "Open-vocabulary labels: worried, tense. She",  # labels first, list ended: closed
        "Open-vocabulary labels: worried, tense\n",
        "She frowns. Open-vocabulary labels: worried.",
        "Open-vocabulary labels: worried, ten",  # still growing
        "Open-vocabulary labels: . She",  # ended, but no label
        "Neutral.",  # a bare list has no marker: a stream may still go on to one
    ]}
    assert list(closed.values()) == [True, True, True, False, False, False]
    p = parse_answer("Open-vocabulary labels: sad. Her voice drops.", ["sad", "happy"])
    assert (p.label, p.labels, p.explanation, p.labels_closed) == ("sad", ["sad"], "Her voice drops.", True)


def test_one_label_normaliser_for_parsing_and_scoring():
    from model.net.answers import normalize_label
    from model.evaluate import metrics

    assert metrics.normalize_label is normalize_label  # scoring uses the parser's rule
    assert normalize_label('  "Looking_Forward  To." ') == "looking forward to"
    # an answer's label and a gold label written differently compare equal
    assert parse_answer("Looking_forward to.").label == normalize_label("LOOKING FORWARD TO!")


def test_generate_decodes_each_row_as_if_alone(tiny_checkpoint):
    """One encode → generate → decode → parse for the analyser, predict and quant: a
    left-padded batch answers each prompt exactly as that prompt alone, cut after it."""
    import numpy as np

    from model.checkpoint.loading import load
    from model.net.processor import Clip
    from model.serve.generate import encode, generate

    model, processor = load(tiny_checkpoint)
    rng = np.random.default_rng(0)
    clips = [Clip(audio=rng.standard_normal(16000).astype(np.float32) * 0.1),
             Clip(audio=rng.standard_normal(16000).astype(np.float32) * 0.1)]
    prompts = ["How does she feel?", "Describe the emotion of the person in this clip, with the cues."]
    together = generate(model, processor, encode(model, processor, prompts, clips), 5, options=["happy", "sad"])
    for prompt, clip, answer in zip(prompts, clips, together):
        batch = encode(model, processor, [prompt], [clip])
        alone = generate(model, processor, batch, 5, options=["happy", "sad"])[0]
        assert answer.text == alone.text and alone.prompt_tokens == batch["input_ids"].shape[1]
        assert alone.ids.numel() <= 5 and alone.text == processor.decode(alone.ids).strip()
        assert alone.parsed == parse_answer(alone.text, ["happy", "sad"])
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, processor, batch, 0)
