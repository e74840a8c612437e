"""``python -m model.evaluate``: classify, emer-ov, predict wiring, and input errors."""
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from model.evaluate import cli as evaluate
from model.serve.generate import EVAL_MAX_NEW_TOKENS
from model.data.manifest import make_sample, write_manifest

REPO = Path(__file__).resolve().parents[1]
MER_OV = Path(__file__).resolve().parent / "data" / "mer2024-ov"  # provenance: tests/data/README.md


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run(capsys, *argv):
    rc = evaluate.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# ------------------------------------------------------------------------ classify
def test_classify_json_png_and_missing_reported(tmp_path, capsys):
    gold = _jsonl(tmp_path / "gold.jsonl", [
        {"id": "a", "label": "happy"}, {"id": "b", "label": "happy"},
        {"id": "c", "label": "sad"}, {"id": "d", "label": "angry"}])
    pred = _jsonl(tmp_path / "pred.jsonl", [
        {"id": "a", "label": "happy"}, {"id": "b", "label": "sad"},
        {"id": "c", "label": "sad", "text": "sad."}])  # d missing
    rc, out, err = _run(capsys, "classify", "--pred", pred, "--gold", gold, "--json")
    assert rc == 0
    # recall happy 1/2, sad 1/1, angry 0/1 → UAR 50%; WAR 2/4 = 50%
    assert json.loads(out) == {"uar": pytest.approx(50.0), "war": pytest.approx(50.0), "n": 4}
    assert "1 gold ids have no prediction" in err and "d" in err
    png = tmp_path / "pred.confusion.png"
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_classify_uar_differs_from_war(tmp_path, capsys):
    gold = _jsonl(tmp_path / "g.jsonl", [{"id": str(i), "label": "happy" if i < 3 else "sad"}
                                        for i in range(4)])
    pred = _jsonl(tmp_path / "p.jsonl", [{"id": str(i), "label": "happy"} for i in range(4)])
    rc, out, _ = _run(capsys, "classify", "--pred", pred, "--gold", gold, "--json",
                      "--classes", "dfew")
    assert rc == 0
    assert json.loads(out) == {"uar": pytest.approx(50.0), "war": pytest.approx(75.0), "n": 4}
    rc, out, _ = _run(capsys, "classify", "--pred", pred, "--gold", gold)
    assert "UAR 50.00%  WAR 75.00%" in out


@pytest.mark.parametrize("pred_text, msg", [
    ('{"id": "a", "label": "happy"}\n{"id": "b", "label"\n', "p.jsonl:2: invalid JSON"),
    ('{"id": "a", "label": 3}\n', "p.jsonl:1: 'label' must be a string or null"),
    ('{"id": "a", "label": "x"}\n{"id": "a", "label": "y"}\n', "p.jsonl:2: duplicate id"),
    ('{"label": "x"}\n', "p.jsonl:1: 'id'"),
])
def test_classify_bad_lines_one_line_error(tmp_path, capsys, pred_text, msg):
    gold = _jsonl(tmp_path / "g.jsonl", [{"id": "a", "label": "happy"}])
    pred = tmp_path / "p.jsonl"
    pred.write_text(pred_text)
    rc, out, err = _run(capsys, "classify", "--pred", pred, "--gold", gold, "--json")
    assert rc == 2 and out == ""
    assert msg in err and len(err.strip().splitlines()) == 1


def test_module_entry_point_no_traceback(tmp_path):
    gold = _jsonl(tmp_path / "g.jsonl", [{"id": "a", "label": "happy"}])
    r = subprocess.run([sys.executable, "-m", "model.evaluate", "classify", "--pred",
                        str(tmp_path / "missing.jsonl"), "--gold", str(gold), "--json"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {tmp_path / 'missing.jsonl'}: no such file"


# ------------------------------------------------------------------------- emer-ov
def test_emer_ov_jsonl_and_csv_layouts_agree(tmp_path, capsys):
    syn = tmp_path / "syn.json"
    syn.write_text(json.dumps([["happy", "joyful"], ["sad", "down"]]))
    gold = _jsonl(tmp_path / "g.jsonl", [{"id": "1", "labels": ["Happy", "tense"]},
                                        {"id": "2", "labels": ["sad"]}])
    pred = _jsonl(tmp_path / "p.jsonl", [{"id": "1", "labels": ["joyful"]}])
    rc, out, err = _run(capsys, "emer-ov", "--pred", pred, "--gold", gold, "--synonyms", syn,
                        "--json")
    # 1: P={happy} ⊂ G={happy, tense} → p 1, r 1/2; 2: missing → 0, 0
    assert rc == 0
    assert json.loads(out) == {"precision": pytest.approx(50.0), "recall": pytest.approx(25.0),
                               "avg": pytest.approx(37.5), "n": 2}
    assert "no prediction (scored 0): 2" in err
    gcsv = tmp_path / "g.csv"
    gcsv.write_text("name,openset\n1,\"['Happy', 'tense']\"\n2,['sad']\n")
    pcsv = tmp_path / "p.csv"
    pcsv.write_text("name,openset\n1,['joyful']\n2,[]\n")
    rc, out2, _ = _run(capsys, "emer-ov", "--pred", pcsv, "--gold", gcsv, "--synonyms", syn,
                       "--json")
    assert rc == 0 and json.loads(out2) == json.loads(out)


def test_emer_ov_argument_and_input_errors(tmp_path, capsys):
    gold = _jsonl(tmp_path / "g.jsonl", [{"id": "1", "labels": ["a"]}])
    rc, _, err = _run(capsys, "emer-ov", "--pred", gold, "--gold", gold, "--json")
    assert rc == 2 and "exactly one of --synonyms" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("video,label\nx,y\n")
    rc, _, err = _run(capsys, "emer-ov", "--pred", bad, "--gold", gold, "--synonyms", gold)
    assert rc == 2 and "name,openset" in err
    syn = tmp_path / "syn.json"
    syn.write_text("{\n  oops")
    rc, _, err = _run(capsys, "emer-ov", "--pred", gold, "--gold", gold, "--synonyms", syn)
    assert rc == 2 and "syn.json:2: invalid JSON" in err
    empty = _jsonl(tmp_path / "e.jsonl", [{"id": "1", "labels": []}])
    rc, _, err = _run(capsys, "emer-ov", "--pred", gold, "--gold", empty, "--synonyms", gold)
    assert rc == 2 and "gold samples with no labels: 1" in err


def test_emer_ov_reference_files_exact(capsys):
    rc, out, _ = _run(capsys, "emer-ov", "--pred", MER_OV / "predict-openset.csv",
                      "--gold", MER_OV / "check-openset.csv",
                      "--synonyms", MER_OV / "openset-synonym.json", "--json")
    assert rc == 0
    assert json.loads(out) == {"precision": 100 * 0.581777108433735,
                               "recall": 100 * 0.4977911646586345,
                               "avg": 100 * 0.5397841365461847, "n": 332}


# ------------------------------------------------------------------------- predict
def _manifest(tmp_path):
    samples = [
        make_sample("c1", "emotion_cls", "Which emotion can you recognize being expressed by the "
                    "characters? sad, happy, angry.", "sad.", video="a.mp4",
                    label="sad", options=["sad", "happy", "angry"]),
        # no stored options: recovered from the prompt
        make_sample("c2", "emotion_cls", "Which emotion can you recognize being expressed by the "
                    "characters? anger, happiness.", "anger.", video="b.mp4"),
        make_sample("r1", "emotion_reason", "What insights ...?", "x. Open-vocabulary labels: a.",
                    video="c.mp4"),
    ]
    path = tmp_path / "m.jsonl"
    write_manifest(samples, path)
    return path


def test_predict_parses_labels_from_generated_text(tmp_path, capsys, monkeypatch, tiny_checkpoint):
    texts = {"c1": "The answer is happy.", "c2": "Angry.",
             "r1": "He frowns. Open-vocabulary labels: Worried, tense."}
    calls = {}

    def predict_manifest(model_dir, manifest, out_path, batch_size, device, cache_dir, max_new_tokens):
        calls.update(model_dir=Path(model_dir), batch_size=batch_size, device=device, cache_dir=cache_dir,
                     max_new_tokens=max_new_tokens)
        _jsonl(Path(out_path), [{"id": k, "text": v} for k, v in texts.items()])
        return len(texts)

    monkeypatch.setitem(sys.modules, "model.evaluate.predict",
                        types.SimpleNamespace(predict_manifest=predict_manifest))
    out = tmp_path / "pred.jsonl"
    rc, _, err = _run(capsys, "predict", "--model", tiny_checkpoint, "--data",
                      _manifest(tmp_path), "--out", out, "--batch-size", "2", "--device", "cpu")
    assert rc == 0, err
    assert calls == {"model_dir": tiny_checkpoint, "batch_size": 2, "device": "cpu", "cache_dir": None,
                     "max_new_tokens": EVAL_MAX_NEW_TOKENS}
    (tmp_path / "cache").mkdir()  # --cache and --max-new-tokens reach predict_manifest
    rc, _, err = _run(capsys, "predict", "--model", tiny_checkpoint, "--data", _manifest(tmp_path),
                      "--out", out, "--cache", tmp_path / "cache", "--max-new-tokens", "17", "--overwrite")
    assert rc == 0, err
    # --device auto reaches predict_manifest resolved by the CLI: cuda on a GPU machine, else cpu
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    assert (calls["cache_dir"], calls["max_new_tokens"], calls["device"]) == (str(tmp_path / "cache"), 17, auto)
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["c1"]["label"] == "happy" and rows["c1"]["text"] == texts["c1"]
    assert rows["c2"]["label"] == "anger"  # option spelling, from the prompt's list
    assert rows["r1"]["labels"] == ["worried", "tense"] and rows["r1"]["label"] == "worried"
    assert set(rows["c1"]) >= {"id", "text", "label", "labels"}


def test_predict_validates_before_loading(tmp_path, capsys, monkeypatch, tiny_checkpoint):
    monkeypatch.setitem(sys.modules, "model.evaluate.predict", types.SimpleNamespace(
        predict_manifest=lambda *a: pytest.fail("must not run on bad input")))
    rc, _, err = _run(capsys, "predict", "--model", tmp_path / "nope", "--data", "x", "--out", "y")
    assert rc == 2 and "no Omni-Emotion checkpoint at" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "video": "v.mp4", "task": "asr", "conversations": []}\n')
    rc, _, err = _run(capsys, "predict", "--model", tiny_checkpoint, "--data", bad,
                      "--out", tmp_path / "o.jsonl")
    assert rc == 2 and "bad.jsonl:1" in err
    rc, _, err = _run(capsys, "predict", "--model", tiny_checkpoint, "--data", bad,
                      "--out", tmp_path / "o.jsonl", "--batch-size", "0")
    assert rc == 2 and "--batch-size" in err
    good = _manifest(tmp_path)
    rc, _, err = _run(capsys, "predict", "--model", tiny_checkpoint, "--data", good,
                      "--out", tmp_path / "o.jsonl", "--max-new-tokens", "0")
    assert rc == 2 and "--max-new-tokens" in err
    rc, _, err = _run(capsys, "predict", "--model", tiny_checkpoint, "--data", good,
                      "--out", tmp_path / "o.jsonl", "--cache", tmp_path / "no-cache")
    assert rc == 2 and "cache folder not found" in err
