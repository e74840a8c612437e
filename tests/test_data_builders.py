"""Builders on small label files in each public format, written here."""
import json
from pathlib import Path

import numpy as np
import pytest

from model.data import builders as B
from tests.media import make_clip
from model.data.manifest import read_manifest
from model.net.templates import (
    ASR_INSTRUCTIONS, AUDIO_CAPTION_INSTRUCTIONS, DFEW_CLASSES, MAFW_CLASSES, OV_LABELS_MARKER,
    REASONING_INSTRUCTIONS, options_from_prompt,
)


def _touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"x")
    return folder


def _q(s):
    return s["conversations"][0]["content"]


def _a(s):
    return s["conversations"][1]["content"]


# ------------------------------------------------------------------------- phase 1
def test_commonvoice(tmp_path):
    clips = _touch(tmp_path / "clips", "cv_1.mp3", "cv_2.mp3")
    tsv = tmp_path / "train.tsv"
    tsv.write_text("client_id\tpath\tsentence\tup_votes\n"
                   'c\tcv_1.mp3\tHe said "hi" to me\t2\n'
                   "c\tcv_2.mp3\tthe cat sat\t1\n"
                   "c\tcv_3.mp3\tgone\t1\n")
    r = B.build_commonvoice(tsv, clips, seed=0)
    assert [s["id"] for s in r.samples] == ["commonvoice/cv_1", "commonvoice/cv_2"]
    s = r.samples[0]
    assert s["task"] == "asr" and s["video"] is None
    assert s["audio"] == str((clips / "cv_1.mp3").resolve())
    assert _q(s) in ASR_INSTRUCTIONS
    assert _a(s) == 'He said "hi" to me.'  # quotes kept: TSV read without CSV quoting
    assert _a(r.samples[1]) == "The cat sat."
    assert [(k.id, "missing file" in k.reason) for k in r.skipped] == [("commonvoice/cv_3", True)]
    tsv.write_text("client_id\tpath\tsentence\nc\tcv_1.mp3\t\n")
    with pytest.raises(ValueError, match=r"train.tsv:2: empty 'sentence'"):
        B.build_commonvoice(tsv, clips)
    tsv.write_text("client_id\tfile\tsentence\n")
    with pytest.raises(ValueError, match=r"train.tsv:1: missing columns \['path'\]"):
        B.build_commonvoice(tsv, clips)


def test_wavcaps(tmp_path):
    audio = _touch(tmp_path / "audio", "Yb0RFKhbpFJA.flac", "180913.flac")
    js = tmp_path / "as_final.json"
    js.write_text(json.dumps({"num_captions_per_audio": 1, "data": [
        {"id": "Yb0RFKhbpFJA.wav", "caption": "Wind and a man speaking are heard", "audio": "wav_path"},
        {"id": 180913, "caption": "a dog barks."}]}))
    r = B.build_wavcaps(js, audio)
    assert [s["id"] for s in r.samples] == ["wavcaps/Yb0RFKhbpFJA", "wavcaps/180913"]
    assert r.samples[0]["audio"].endswith("Yb0RFKhbpFJA.flac")
    assert _a(r.samples[0]) == "Wind and a man speaking are heard."
    assert all(_q(s) in AUDIO_CAPTION_INSTRUCTIONS for s in r.samples)
    js.write_text(json.dumps({"data": [{"id": "x", "caption": ""}]}))
    with pytest.raises(ValueError, match="item 0: bad 'caption'"):
        B.build_wavcaps(js, audio)


def test_vggsound_split_and_bad_rows(tmp_path):
    vids = _touch(tmp_path / "v", "abc_000030.mp4", "def_000000.mp4")
    csv_path = tmp_path / "vggsound.csv"
    csv_path.write_text("# YouTube ID, start seconds, label, train/test split\n"
                        "abc,30,people marching,train\n"
                        "def,0,dog barking,test\n")
    r = B.build_vggsound(csv_path, vids)
    assert [s["id"] for s in r.samples] == ["vggsound/abc_30"]
    s = r.samples[0]
    assert s["video"] is None and s["audio"].endswith("abc_000030.mp4")  # audio-only phase 1
    assert _a(s) == "People marching." and s["task"] == "audio_caption"
    assert len(B.build_vggsound(csv_path, vids, split=None).samples) == 2
    csv_path.write_text("abc,30,people marching,train\nabc,xx,dog,train\n")
    with pytest.raises(ValueError, match=r"vggsound.csv:2: start_seconds 'xx'"):
        B.build_vggsound(csv_path, vids)


# ------------------------------------------------------------------------- phase 2
def test_label_csv_options_shuffled_per_sample_and_seeded(tmp_path):
    vids = _touch(tmp_path / "v", *(f"{i}.mp4" for i in range(20)))
    csv_path = tmp_path / "labels.csv"
    labels = ["happy", "sad", "angry", "neutral"]
    csv_path.write_text("video,label\n" + "".join(f"{i}.mp4,{labels[i % 4].upper()}\n"
                                                   for i in range(20)))
    r = B.build_label_csv(csv_path, vids, seed=7, dataset="toy")
    assert len(r.samples) == 20 and not r.skipped
    orders = set()
    for i, s in enumerate(r.samples):
        assert s["id"] == f"toy/{i}" and s["task"] == "emotion_cls"
        assert s["label"] == labels[i % 4] and _a(s) == f"{labels[i % 4]}."
        assert options_from_prompt(_q(s)) == s["options"]
        assert sorted(s["options"]) == sorted(labels)
        orders.add(tuple(s["options"]))
    assert len(orders) > 5
    again = B.build_label_csv(csv_path, vids, seed=7, dataset="toy")
    assert again.samples == r.samples
    other = B.build_label_csv(csv_path, vids, seed=8, dataset="toy")
    assert other.samples != r.samples
    csv_path.write_text("video,label\n0.mp4,happy\n1.mp4,bored\n")
    with pytest.raises(ValueError, match=r"labels.csv:3: label 'bored' is not one of"):
        B.build_label_csv(csv_path, vids, options=labels)
    csv_path.write_text("video,label\n0.mp4,happy\n0.mp4,sad\n")
    with pytest.raises(ValueError, match="labels.csv:3: duplicate sample id"):
        B.build_label_csv(csv_path, vids)


def test_dfew_indices(tmp_path):
    vids = _touch(tmp_path / "clip", "00001.mp4", "00017.mp4")
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("video_name,label\n1,4\n17,7\n18,1\n")
    r = B.build_dfew(csv_path, vids)
    assert [(s["id"], s["label"]) for s in r.samples] == [("dfew/00001", "angry"), ("dfew/00017", "fear")]
    assert sorted(r.samples[0]["options"]) == sorted(DFEW_CLASSES)
    assert r.n_skipped == 1 and r.skipped[0].id == "dfew/00018"
    csv_path.write_text("video_name,label\n1,4\n2,8\n")
    with pytest.raises(ValueError, match=r"train.csv:3: label '8' is not 1..7"):
        B.build_dfew(csv_path, vids)
    csv_path.write_text("video_name,label\n1,happy\n")
    with pytest.raises(ValueError, match=r"train.csv:2"):
        B.build_dfew(csv_path, vids)


def test_mafw_names_and_indices(tmp_path):
    vids = _touch(tmp_path / "clips", "00019.mp4", "00020.mp4", "00021.mp4")
    txt = tmp_path / "train.txt"
    txt.write_text("clip label\n00019.mp4 anger\n00020 11\n\n00021.mp4,Contempt\n")
    r = B.build_mafw(txt, vids)
    assert [(s["id"], s["label"]) for s in r.samples] == [
        ("mafw/00019", "anger"), ("mafw/00020", "disappointment"), ("mafw/00021", "contempt")]
    assert len(r.samples[0]["options"]) == len(MAFW_CLASSES)
    txt.write_text("00019.mp4 anger\n00020.mp4 angry\n")
    with pytest.raises(ValueError, match=r"train.txt:2: label 'angry'"):
        B.build_mafw(txt, vids)
    txt.write_text("00019.mp4 anger extra\n")
    with pytest.raises(ValueError, match=r"train.txt:1: expected 'clip label'"):
        B.build_mafw(txt, vids)


# ------------------------------------------------------------------------- phase 3
def test_reasoning_json_and_jsonl(tmp_path):
    vids = _touch(tmp_path / "v", "s1.mp4", "x.mp4")
    items = [{"id": "s1", "explanation": "He frowns and his voice is sharp",
              "labels": ["Angry", "irritated"]},
             {"name": "s2", "video": "x.mp4", "description": "She smiles.",
              "openset": "['happy', 'relaxed']"}]
    js = tmp_path / "sre.json"
    js.write_text(json.dumps(items))
    r = B.build_reasoning(js, vids, dataset="sre")
    assert [s["id"] for s in r.samples] == ["sre/s1", "sre/s2"]
    s1, s2 = r.samples
    assert _a(s1) == f"He frowns and his voice is sharp. {OV_LABELS_MARKER} angry, irritated."
    assert s1["labels"] == ["angry", "irritated"] and s1["task"] == "emotion_reason"
    assert _q(s1) in REASONING_INSTRUCTIONS
    assert s2["video"].endswith("x.mp4") and s2["labels"] == ["happy", "relaxed"]
    jl = tmp_path / "sre.jsonl"
    jl.write_text("".join(json.dumps(i) + "\n" for i in items))
    assert B.build_reasoning(jl, vids, dataset="sre").samples == r.samples
    js.write_text(json.dumps([{"id": "s1", "explanation": "x", "labels": []}]))
    with pytest.raises(ValueError, match="item 0: s1: no open-vocabulary labels"):
        B.build_reasoning(js, vids)


# ------------------------------------------------------------------- CLI and cache
def test_cli_writes_manifest_and_counts_skips(tmp_path, capsys):
    vids = _touch(tmp_path / "v", "00001.mp4")
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("video_name,label\n1,2\n2,3\n")
    out = tmp_path / "m.jsonl"
    assert B.main(["dfew", str(csv_path), str(vids), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "skipped dfew/00002: missing file" in err and "wrote 1 samples" in err and "skipped 1" in err
    assert [s["label"] for s in read_manifest(out)] == ["sad"]
    written = out.read_text()
    assert B.main(["dfew", str(csv_path), str(vids), "--out", str(out)]) == 2  # never replaced silently
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == written
    csv_path.write_text("video_name,label\n1,9\n")
    assert B.main(["dfew", str(csv_path), str(vids), "--out", str(out), "--overwrite"]) == 2
    assert "train.csv:2" in capsys.readouterr().err and out.read_text() == written
    csv_path.write_text("video_name,label\n1,3\n")
    assert B.main(["dfew", str(csv_path), str(vids), "--out", str(out), "--overwrite"]) == 0
    assert [s["label"] for s in read_manifest(out)] == ["neutral"]


def test_undecodable_video_dropped_with_count(tmp_path):
    vids = tmp_path / "v"
    vids.mkdir()
    make_clip(vids / "good.mp4", seconds=1.0, fps=10, size=(96, 64), face=False, speech=None)
    (vids / "bad.mp4").write_bytes(b"\x00not a video" * 50)
    csv_path = tmp_path / "l.csv"
    csv_path.write_text("video,label\ngood.mp4,happy\nbad.mp4,sad\n")
    r = B.build_label_csv(csv_path, vids)
    assert len(r.samples) == 2

    from model.data.preprocess import no_face_tracker

    summary = B.drop_undecodable(r, tmp_path / "cache", face_tracker=no_face_tracker, progress=False)
    assert [s["id"] for s in r.samples] == ["csv/good"]
    assert r.n_skipped == 1 and r.skipped[0].id == "csv/bad"
    assert "bad.mp4" in r.skipped[0].reason
    assert summary.done == ["csv/good"] and list(summary.failed) == ["csv/bad"]
