"""Issue 12: per-frame encoder reuse is exact and bounded; the audio context and the
answer order are model fields that training and serving both read."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from live.window import Window
from model.checkpoint.loading import build_tiny, load, save
from model.net.answers import parse_answer
from model.net.templates import reasoning_answer
from model.net import tokens
from model.net.processor import Clip
from model.serve.analyser import OmniEmotionAnalyser
from model.serve.features import CACHE_FRAMES
from model.serve.generate import AnswerTracker, encode
from model.train.collator import TrainCollator

T, HOP_FRAMES, N_WINDOWS = 8, 2, 12  # 8 frames 0.5 s apart per 4 s window, 1 s hop
RNG = np.random.default_rng(1)
# A source of frames (one every 0.5 s) with one crop each; some frames have no face.
N_SOURCE = T + HOP_FRAMES * (N_WINDOWS - 1)
FRAMES = RNG.integers(0, 256, (N_SOURCE, 48, 64, 3), dtype=np.uint8)
CROPS = RNG.integers(0, 256, (N_SOURCE, 224, 224, 3), dtype=np.uint8)
PRESENT = np.array([i % 5 != 3 for i in range(N_SOURCE)])


def window(i: int, stream_id: str = "s1") -> Window:
    sl = slice(HOP_FRAMES * i, HOP_FRAMES * i + T)
    present = PRESENT[sl].copy()
    return Window(
        index=i, start=float(i), end=float(i) + 4.0, frames=FRAMES[sl], frame_times=0.25 + 0.5 * np.arange(N_SOURCE)[sl],
        faces=CROPS[sl] * present[:, None, None, None], face_present=present,
        face_boxes=np.zeros((T, 4), np.float32), face_track=1,
        audio=(RNG.standard_normal(64000) * 0.1).astype(np.float32), speech=[], speech_ratio=0.0, stream_id=stream_id,
    )


@pytest.mark.parametrize("fusion", ["video_concat", "cross_attention"])
def test_reuse_gives_the_same_logits_and_encodes_each_frame_once(fusion):
    model, processor = build_tiny(fusion=fusion)
    reuse = OmniEmotionAnalyser(model, processor, reuse=True)
    plain = OmniEmotionAnalyser(model, processor, reuse=False)
    worst = 0.0
    for i in range(N_WINDOWS):
        w = window(i)
        ids = [(w.stream_id, float(t)) for t in w.frame_times]
        clip = w
        with torch.inference_mode():
            a = model(**reuse.inputs(clip, ids)).logits
            b = model(**plain.inputs(clip, ids)).logits
        worst = max(worst, float((a - b).abs().max()))
    assert worst <= 1e-5
    n = reuse.stats["windows"]
    assert reuse.stats["vision_frames_encoded"] == N_SOURCE  # each source frame once
    assert reuse.stats["face_crops_encoded"] == int(PRESENT.sum())  # each present crop once
    assert reuse.stats["vision_frames_encoded"] / n <= 2.5 and reuse.stats["face_crops_encoded"] / n <= 2.5
    assert plain.stats["vision_frames_encoded"] == T * n
    assert len(reuse.stream.cache) <= 2 * CACHE_FRAMES  # bounded


def test_new_stream_clears_the_cache_and_generation_is_unchanged():
    model, processor = build_tiny()
    reuse = OmniEmotionAnalyser(model, processor, max_new_tokens=4)
    plain = OmniEmotionAnalyser(model, processor, max_new_tokens=4, reuse=False)
    for i in range(3):
        assert reuse(window(i))["text"] == plain(window(i))["text"]
    assert reuse.stats["vision_frames_encoded"] == T + 2 * HOP_FRAMES
    reuse(window(3, stream_id="s2"))  # same frame times, another stream: all encoded again
    assert reuse.stats == {**reuse.stats, "windows": 1, "vision_frames_encoded": T}


def test_window_audio_context_runs_the_encoder_on_the_window():
    long_model, processor = build_tiny(audio_context="30s")
    model, wprocessor = build_tiny(audio_context="window")
    clip = Clip(audio=(RNG.standard_normal(64000) * 0.1).astype(np.float32))
    full = encode(long_model, processor, ["x"], [clip])
    short = encode(model, wprocessor, ["x"], [clip])
    assert full["input_features"].shape[-1] == 3000
    assert short["input_features"].shape[-1] == tokens.audio_mel_frames(model.config, 64000) == 402
    count = tokens.audio_token_count(model.config, 64000)
    assert count == tokens.audio_token_count(long_model.config, 64000) == 67
    assert model.model.audio_features(short["input_features"]).shape[1] == count
    # the first 402 mel frames are the same input in both contexts
    assert torch.allclose(full["input_features"][..., :402], short["input_features"], atol=1e-6)
    with torch.inference_mode():
        assert model(**short).logits.isfinite().all()
    # two clips of different lengths batch together (the shorter padded)
    two = encode(model, wprocessor, ["x", "y"], [clip, Clip(audio=clip.audio[:32000])])
    assert two["input_features"].shape[-1] == 402


def test_training_and_serving_read_the_same_fields(tmp_path):
    model, processor = build_tiny(audio_context="window", answer_format="labels_first")
    save(model, processor, tmp_path)
    model, processor = load(tmp_path)
    assert (model.config.audio_context, model.config.answer_format) == ("window", "labels_first")
    # the trainer's collator: window-length audio and a labels-first target whatever the manifest holds
    target = reasoning_answer("She frowns and her voice shakes", ["worried", "tense"])  # explanation first
    item = {"id": "a", "clip": Clip(audio=np.zeros(64000, np.float32) + 0.01),
            "conversation": [{"role": "user", "content": "How does she feel?"}, {"role": "assistant", "content": target}]}
    batch = TrainCollator(processor)([item])
    assert batch["input_features"].shape[-1] == 402
    answer_ids = batch["labels"][0][batch["labels"][0] != -100]
    assert processor.decode(answer_ids).startswith("Open-vocabulary labels: worried, tense.")
    # serving: the analyser stops a labels-first answer once its labels are out
    analyser = OmniEmotionAnalyser(model, processor, max_new_tokens=6, explain_every_s=10.0)
    assert analyser.analyse(Clip())["tokens"]["to_label"] is None  # random text: no label line, no stop


def test_stop_after_labels_stops_at_the_label_line_unless_explaining():
    _, processor = build_tiny()
    answer = reasoning_answer("She frowns.", ["sad", "tired"], "labels_first")
    ids = torch.tensor([[7, 7] + processor.tokenizer(answer, add_special_tokens=False)["input_ids"]])
    stop = AnswerTracker(processor, 2, explain=[lambda parsed: False])
    go_on = AnswerTracker(processor, 2, explain=[lambda parsed: parsed.label == "sad"])
    n_label = next(n for n in range(1, ids.shape[1] - 1) if stop(ids[:, : 2 + n], None)[0])
    assert processor.decode(ids[0, 2: 2 + n_label]).strip() == "Open-vocabulary labels: sad, tired."
    assert stop.tokens_to_label[0] == n_label
    assert not any(go_on(ids[:, : 2 + n], None)[0] for n in range(1, ids.shape[1] - 1))
    assert go_on.explained(0)


@pytest.mark.parametrize("fmt", ["explanation_first", "labels_first"])
def test_parse_both_orders(fmt):
    parsed = parse_answer(reasoning_answer("He grins. He laughs", ["happy", "amused"], fmt))
    assert (parsed.label, parsed.labels, parsed.explanation) == ("happy", ["happy", "amused"], "He grins. He laughs.")


def test_a_batch_of_interleaved_streams_reuses_each_streams_frames_exactly():
    """The pool's path: windows of three streams batched together, each encoded through
    its own stream's cache, equal the windows analysed alone without reuse."""
    model, processor = build_tiny()
    pooled = OmniEmotionAnalyser(model, processor, max_new_tokens=4)
    plain = OmniEmotionAnalyser(model, processor, max_new_tokens=4, reuse=False)
    names = ["a", "b", "c"]
    streams = {n: pooled.new_stream(n) for n in names}
    starts = {"a": 0, "b": 3, "c": 5}  # the streams are at different places in the source
    worst = 0.0
    for step in range(3):
        ws = [window(starts[n] + step, stream_id=n) for n in names]
        clips = list(ws)
        ids = [pooled.frame_ids(w) for w in ws]
        if step == 2:  # the prefill logits, batched + reuse vs alone without
            with torch.inference_mode():
                batched = model(**pooled.batch_inputs(clips, ids, [streams[n] for n in names])).logits
                for row, (c, i) in enumerate(zip(clips, ids)):
                    alone = model(**plain.inputs(c, i)).logits
                    worst = max(worst, float((batched[row] - alone[0]).abs().max()))
        results = pooled.analyse_batch(clips, ids, [w.end for w in ws], [streams[n] for n in names])
        for w, r in zip(ws, results):
            assert r["text"] == plain(w)["text"]
            assert {k: v for k, v in r.items() if k != "seconds"} == {k: v for k, v in plain(w).items() if k != "seconds"}
    assert worst <= 1e-5
    for n in names:  # 3 windows + the logits pass on window 2: each frame encoded once per stream
        st = streams[n].stats
        assert st["windows"] == 4 and st["vision_frames_encoded"] == T + 2 * HOP_FRAMES
        assert st["face_crops_encoded"] == int(PRESENT[HOP_FRAMES * starts[n]: HOP_FRAMES * (starts[n] + 2) + T].sum())
        assert len(streams[n].cache) <= 2 * CACHE_FRAMES
    assert pooled.stats["windows"] == 0  # the analyser's own stream untouched


def test_the_label_memory_is_per_stream_in_a_batch():
    """Labels first with explain_every_s: in one batch, each row's stop asks its own
    stream's memory (last label, last explanation time)."""
    model, processor = build_tiny(answer_format="labels_first")
    a = OmniEmotionAnalyser(model, processor, max_new_tokens=6, explain_every_s=10.0)
    same, new = a.new_stream("same"), a.new_stream("new")
    same.last_label, same.explained_at = "sad", 9.0  # same label, explained 1 s ago: stop
    new.last_label = "happy"  # the label changed: go on to the explanation
    answer = reasoning_answer("She frowns.", ["sad", "tired"], "labels_first")
    row = [7, 7] + processor.tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([row, row])
    stop = AnswerTracker(processor, 2, explain=[a.policy.wants(s, 10.0) for s in (same, new)])
    n = next(n for n in range(1, ids.shape[1] - 1) if stop(ids[:, : 2 + n], None).any())
    assert stop(ids[:, : 2 + n], None).tolist() == [True, False]
    assert stop.tokens_to_label == {0: n, 1: n}
    assert [stop.explained(0), stop.explained(1)] == [False, True]
    # and the batch path gives each row what the window gives alone (random text: no stop)
    ws = [window(0, "same"), window(1, "new")]
    clips = list(ws)
    batched = a.analyse_batch(clips, [a.frame_ids(w) for w in ws], [10.0, 10.0], [same, new])
    alone = [a.analyse(c, at=10.0, stream=a.new_stream()) for c in clips]
    assert [r["tokens"] for r in batched] == [r["tokens"] for r in alone]
    assert same.stats["windows"] == new.stats["windows"] == 1
