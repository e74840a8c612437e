"""Metrics against hand-computed values, and EMER-OV against the reference numbers."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from model.evaluate.metrics import (
    COL_MISSING, COL_UNPARSED, SynonymGroups, classification_metrics, groups_to_map,
    openset_metrics, parse_group_lists, parse_label_list, sample_overlap, save_confusion_png,
)

MER_OV = Path(__file__).resolve().parent / "data" / "mer2024-ov"  # provenance: tests/data/README.md
# printed by MERTools' calculate_openset_overlap_rate_mer2024 on these files (README)
REF_PRECISION = 0.581777108433735
REF_RECALL = 0.4977911646586345
REF_AVG = 0.5397841365461847


# ------------------------------------------------------------------ classification
GOLD = {"a": "happy", "b": "happy", "c": "sad", "d": "sad", "e": "sad", "f": "angry"}


def test_uar_war_hand_computed_with_unparsed_and_missing():
    # a right, b wrong (sad), c d right, e unparsed (None), f missing
    pred = {"a": "happy", "b": "sad", "c": "sad", "d": "Sad.", "e": None, "zz": "happy"}
    r = classification_metrics(GOLD, pred)
    # recall: happy 1/2, sad 2/3, angry 0/1
    assert r.recall == pytest.approx({"happy": 0.5, "sad": 2 / 3, "angry": 0.0})
    assert r.uar == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)
    assert r.war == pytest.approx(3 / 6)
    assert r.n == 6
    assert r.missing == ["f"]
    assert r.extra == ["zz"]
    assert r.classes == ["angry", "happy", "sad"]
    assert r.columns == ["angry", "happy", "sad", COL_UNPARSED, COL_MISSING]
    expected = np.array([
        [0, 0, 0, 0, 1],  # angry: f missing
        [0, 1, 1, 0, 0],  # happy: a→happy, b→sad
        [0, 0, 2, 1, 0],  # sad: c, d right; e unparsed
    ])
    np.testing.assert_array_equal(r.confusion, expected)


def test_all_predictions_empty_or_missing_score_zero():
    r = classification_metrics(GOLD, {k: None for k in "abc"})
    assert r.uar == 0.0 and r.war == 0.0
    assert r.missing == ["d", "e", "f"]
    assert r.confusion.sum() == 6


def test_perfect_and_weighting_differs_from_unweighted():
    gold = {str(i): "happy" for i in range(9)} | {"s": "sad"}
    pred = {str(i): "happy" for i in range(9)} | {"s": "happy"}
    r = classification_metrics(gold, pred)
    assert r.war == pytest.approx(0.9)  # 9 of 10
    assert r.uar == pytest.approx(0.5)  # happy 1.0, sad 0.0
    assert classification_metrics(gold, gold).uar == 1.0


def test_classes_given_absent_class_not_averaged_and_unknown_gold_raises():
    r = classification_metrics({"a": "happy", "b": "sad"}, {"a": "happy", "b": "fear"},
                               classes=["happy", "sad", "fear", "angry"])
    assert set(r.recall) == {"happy", "sad"}  # fear/angry have no gold samples
    assert r.uar == pytest.approx(0.5)
    assert r.columns == ["happy", "sad", "fear", "angry"]
    with pytest.raises(ValueError, match="not in classes"):
        classification_metrics({"a": "contempt"}, {}, classes=["happy", "sad"])
    with pytest.raises(ValueError, match="no gold"):
        classification_metrics({}, {})


def test_prediction_outside_classes_gets_its_own_column():
    r = classification_metrics({"a": "happy"}, {"a": "elated"})
    assert r.columns == ["happy", "elated"]
    assert r.war == 0.0


def test_confusion_png_written(tmp_path):
    r = classification_metrics(GOLD, {"a": "happy"})
    out = save_confusion_png(r, tmp_path / "cm.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------- EMER-OV
def test_parse_label_list_matches_reference_reader():
    assert parse_label_list("['happy', 'looking forward to']") == ["happy", "looking forward to"]
    assert parse_label_list('["happy", \'sad\']') == ["happy", "sad"]
    # MERTools splits on every quote, so an apostrophe splits a label; kept on purpose
    assert parse_label_list('["don\'t believe", \'doubt\']') == ["don", "t believe", "doubt"]
    assert parse_label_list("[]") == [] and parse_label_list("") == []
    assert parse_label_list(None) == [] and parse_label_list(float("nan")) == []
    assert parse_label_list("happy, sad") == ["happy", "sad"]
    assert parse_label_list(["a ", "", "b"]) == ["a", "b"]
    with pytest.raises(ValueError):
        parse_label_list(3)
    with pytest.raises(ValueError):
        parse_label_list(["a", 1])


def test_groups_map_to_first_word_last_group_wins():
    m = groups_to_map([["Happy", "joyful"], ["calm", "joyful"]])
    assert m == {"happy": "happy", "joyful": "calm", "calm": "calm"}
    assert parse_group_lists("[['happy', 'glad'], ['sad']]") == [["happy", "glad"], ["sad"]]
    with pytest.raises(ValueError):
        parse_group_lists([["a"], "b"])


def test_openset_hand_computed_with_empty_and_missing_predictions():
    groups = SynonymGroups.from_obj([["happy", "joyful", "glad"], ["sad", "down"]])
    gold = {"s1": ["Happy", "worried"], "s2": ["sad"], "s3": ["angry", "down"]}
    pred = {"s1": ["joyful", "sad", "worried"], "s2": [], "x": ["happy"]}
    r = openset_metrics(gold, pred, groups)
    # s1: G={happy, worried}, P={happy, sad, worried} → p 2/3, r 2/2; s2 empty → 0, 0;
    # s3 missing → 0, 0
    assert r.per_sample == {"s1": pytest.approx((2 / 3, 1.0)), "s2": (0.0, 0.0), "s3": (0.0, 0.0)}
    assert r.precision == pytest.approx(2 / 9)
    assert r.recall == pytest.approx(1 / 3)
    assert r.avg == pytest.approx(5 / 18)
    assert r.n == 3 and r.missing == ["s3"] and r.extra == ["x"]


def test_openset_synonyms_collapse_duplicates_and_unknown_labels_are_own_group():
    m = groups_to_map([["happy", "joyful"]])
    assert sample_overlap(["happy"], ["happy", "joyful"], m) == (1.0, 1.0)  # one group
    assert sample_overlap(["happy"], ["glad"], m) == (0.0, 0.0)  # glad: its own group
    assert sample_overlap(["a", "b"], ["A."], {}) == (1.0, 0.5)  # lower-cased, punctuation
    with pytest.raises(ValueError, match="empty gold"):
        sample_overlap([], ["a"], {})


def test_synonym_shapes():
    shared = SynonymGroups.from_obj({"joyful": "Happy", "glad": "happy"})
    assert shared.for_sample("any") == {"joyful": "happy", "glad": "happy"}
    per = SynonymGroups.from_obj({"s1": [["happy", "glad"]], "s2": "[['sad', 'down']]"})
    assert per.for_sample("s1") == {"happy": "happy", "glad": "happy"}
    assert per.for_sample("s2") == {"sad": "sad", "down": "sad"}
    assert per.for_sample("s3") is None
    with pytest.raises(ValueError):
        SynonymGroups.from_obj("happy")
    with pytest.raises(ValueError, match="s2"):
        SynonymGroups.from_obj({"s1": [["ok"]], "s2": [1, 2]})


def test_per_sample_groups_skip_samples_without_groups():
    groups = SynonymGroups.from_obj({"s1": [["happy", "glad"]]})
    r = openset_metrics({"s1": ["happy"], "s2": ["sad"]}, {"s1": ["glad"], "s2": ["sad"]}, groups)
    assert r.n == 1 and r.no_groups == ["s2"]
    assert (r.precision, r.recall) == (1.0, 1.0)
    with pytest.raises(ValueError, match="no gold sample has synonym groups"):
        openset_metrics({"s9": ["a"]}, {}, groups)


def _read_ref_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return {row["name"]: parse_label_list(row["openset"]) for row in csv.DictReader(f)}


def test_reproduces_mertools_reference_exactly():
    gold = _read_ref_csv(MER_OV / "check-openset.csv")
    pred = _read_ref_csv(MER_OV / "predict-openset.csv")
    groups = SynonymGroups.from_obj(json.loads((MER_OV / "openset-synonym.json").read_text()))
    r = openset_metrics(gold, pred, groups)
    assert r.n == 332
    assert r.precision == REF_PRECISION
    assert r.recall == REF_RECALL
    assert r.avg == REF_AVG
    # the apostrophe quirk matters: reading labels with a real list parser moves the score
    import ast

    with open(MER_OV / "predict-openset.csv", newline="", encoding="utf-8") as f:
        strict_pred = {row["name"]: ast.literal_eval(row["openset"]) for row in csv.DictReader(f)}
    with open(MER_OV / "check-openset.csv", newline="", encoding="utf-8") as f:
        strict_gold = {row["name"]: ast.literal_eval(row["openset"]) for row in csv.DictReader(f)}
    strict = openset_metrics(strict_gold, strict_pred, groups)
    assert not math.isclose(strict.precision, REF_PRECISION, abs_tol=1e-6)
