"""Issue 19: one generation loop. `model.serve.generate.AnswerTracker` decodes and parses
each answer once per new token, decides labels-first stopping from that parse and hands
the caller (text, parsed); the answer's parse is the last one.

The reference here is the plain greedy answer of `model.generate` (no stopping
criterion, no streamer), cut where its label list closes when the policy says stop:
what the analyser gave before the loop was rewritten (a stopping criterion only
truncates a greedy answer)."""
from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessorList

import model.serve.generate as gen
from model.checkpoint.loading import build_tiny
from model.net.answers import ParsedAnswer, parse_answer
from model.serve.analyser import OmniEmotionAnalyser
from tests.test_stream_reuse import window

ANSWERS = ["Open-vocabulary labels: sad, tired. She frowns and looks down.",
           "Open-vocabulary labels: happy, glad. He grins widely today."]
MAX_NEW = 20


class Force:
    """Forces each row's first tokens to its script (the rest: the model's own greedy
    choice), so that a random tiny model writes a label line."""

    def __init__(self, prompt_len: int, scripts: list[list[int]]):
        self.prompt_len, self.scripts = prompt_len, scripts

    def __call__(self, input_ids, scores):
        k = input_ids.shape[1] - self.prompt_len
        for row, script in enumerate(self.scripts[: input_ids.shape[0]]):
            if k < len(script):
                scores[row] = -1e9
                scores[row, script[k]] = 0.0
        return scores


def forced_model(answers: list[str]):
    """A labels-first tiny model whose `generate` writes ``answers`` (one per row) first."""
    model, processor = build_tiny(answer_format="labels_first")
    scripts = [processor.tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers]
    plain = model.generate

    def generate(**kw):
        others = list(kw.pop("logits_processor", None) or [])
        force = Force(kw["input_ids"].shape[1], scripts)
        return plain(**kw, logits_processor=LogitsProcessorList([force, *others]))
    model.generate = generate
    return model, processor


def reference(model, processor, batch: dict, stop_at_labels: bool) -> tuple[torch.Tensor, int | None]:
    """Row 0's plain greedy answer ids, cut after its label list when ``stop_at_labels``;
    and the new tokens when the list closed (None: never)."""
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=MAX_NEW, do_sample=False,
                             pad_token_id=processor.tokenizer.pad_token_id)
    ids = out[0, batch["input_ids"].shape[1]:]
    for n in range(1, ids.numel() + 1):
        if parse_answer(processor.decode(ids[:n]).strip()).labels_closed:
            return (ids[:n] if stop_at_labels else ids), n
    return ids, None


def test_stopping_and_answers_equal_the_plain_greedy_answer_cut_at_the_labels():
    model, processor = forced_model(ANSWERS[:1])
    a = OmniEmotionAnalyser(model, processor, max_new_tokens=MAX_NEW, explain_every_s=10.0)
    ends = [4.0, 5.0, 6.0, 30.0]  # first: explain; same label within 10 s: stop; 24 s later: explain
    for i, end in enumerate(ends):
        w = window(i)
        w.end = end
        ids, to_label = reference(model, processor, a.inputs(w, stream=a.new_stream()), stop_at_labels=i in (1, 2))
        result = a(w)
        text = processor.decode(ids).strip()
        expected = parse_answer(text)
        assert (result["text"], result["label"], result["labels"], result["explanation"]) == \
            (text, expected.label, expected.labels, expected.explanation)
        assert result["tokens"]["to_label"] == to_label is not None
        assert result["tokens"]["generated"] == (to_label if i in (1, 2) else ids.numel())
    assert a.stream.last_label == "sad" and a.stream.explained_at == 30.0


def test_a_batch_stops_each_row_as_it_would_alone():
    model, processor = forced_model(ANSWERS)
    a = OmniEmotionAnalyser(model, processor, max_new_tokens=MAX_NEW, explain_every_s=10.0)
    done, fresh = a.new_stream("x"), a.new_stream("y")
    done.last_label, done.explained_at = "sad", 9.0  # row 0 stops at its labels, row 1 explains
    ws = [window(0, "x"), window(1, "y")]
    batched = a.analyse_batch(ws, [a.frame_ids(w) for w in ws], [10.0, 10.0], [done, fresh])
    alone = [forced_model([answer]) for answer in ANSWERS]  # the same weights (seed 0), one script each
    (cut, n0), (full, n1) = [reference(m, p, a.inputs(w, stream=a.new_stream()), stop)
                             for (m, p), w, stop in zip(alone, ws, [True, False])]
    assert [r["text"] for r in batched] == [processor.decode(cut).strip(), processor.decode(full).strip()]
    assert batched[0]["tokens"]["generated"] == n0 == batched[0]["tokens"]["to_label"]
    assert batched[1]["tokens"]["to_label"] == n1 < batched[1]["tokens"]["generated"]
    assert (done.explained_at, fresh.explained_at, fresh.last_label) == (9.0, 10.0, "happy")


@pytest.mark.parametrize("answer_format", ["labels_first", "explanation_first"])
def test_each_new_text_is_parsed_once_and_the_answer_is_the_last_parse(monkeypatch, answer_format):
    parsed_texts = []

    def counting(text, options=None):
        parsed_texts.append(text)
        return parse_answer(text, options)
    monkeypatch.setattr(gen, "parse_answer", counting)
    if answer_format == "labels_first":
        model, processor = forced_model(ANSWERS[:1])
    else:
        model, processor = build_tiny(answer_format=answer_format)
    partials = []
    result = OmniEmotionAnalyser(model, processor, max_new_tokens=MAX_NEW)(
        window(0), on_partial=lambda text, parsed: partials.append((text, parsed)))
    assert len(parsed_texts) == len(set(parsed_texts)) <= result["tokens"]["generated"]  # once per new text
    assert parsed_texts[-1] == result["text"]  # the answer's parse is the last one, not a new one
    assert partials and all(isinstance(p, ParsedAnswer) and p == parse_answer(t) for t, p in partials)
    assert [t for t, _ in partials] == [t for t in parsed_texts if not t.endswith(gen.PARTIAL_CHAR)]
    assert result["text"].startswith(partials[-1][0]) and result["label"] == parse_answer(result["text"]).label
