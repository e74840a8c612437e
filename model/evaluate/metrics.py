"""Evaluation metrics of the paper (§5), as pure functions over id → label maps.

Classification (UAR, WAR) and EMER-OV (MERTools' ``calculate_openset_overlap_rate_mer2024``
exactly, so its published numbers are reproduced): the definitions are in
docs/evaluation.md. Fractions in [0, 1] here; the CLI prints percent. A gold id with
no prediction is never dropped: it counts as wrong (classification) or as an empty
prediction (EMER-OV), and is listed in the result so the CLI reports it.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from live.contract.files import save_figure
from model.net.answers import normalize_label, parse_label_list  # the one label normaliser and list reader

# Confusion-matrix columns for predictions that are not a class.
COL_UNPARSED = "(no label)"  # the prediction line exists but no option was recognised
COL_MISSING = "(missing)"  # no prediction line for this id

# Figure geometry: inches per class, clamped, so 7 and 11 classes both stay readable.
FIG_INCH_PER_CLASS = 0.7
FIG_MIN_INCH, FIG_MAX_INCH = 4.0, 16.0


# ----------------------------------------------------------------------------- labels
def parse_group_lists(value: Any) -> list[list[str]]:
    """Synonym groups from a list of lists, or from the list-of-lists string a judge
    (or MERTools' ``.npy`` cache) returns, e.g. ``"[['happy', 'joyful'], ['sad']]"``.

    Raises:
        ValueError: not a list of lists of strings / not parseable.
    """
    if isinstance(value, str):
        inner = [p for p in re.split(r"[\[\]]", value) if p.strip() not in ("", ",")]
        groups = [parse_label_list(p) for p in inner]
        groups = [g for g in groups if g]
        if not groups:
            raise ValueError(f"no synonym groups in {value[:200]!r}")
        return groups
    if not isinstance(value, list) or not all(
        isinstance(g, list) and all(isinstance(w, str) for w in g) for g in value
    ):
        raise ValueError(f"synonym groups must be a list of lists of strings, got {value!r}")
    return [[w for w in g if w.strip()] for g in value if g]


def groups_to_map(groups: Sequence[Sequence[str]]) -> dict[str, str]:
    """Every word → its group's first word (lower-cased). A word in several groups maps
    to the last group's head, as in MERTools (later assignments win)."""
    mapping: dict[str, str] = {}
    for group in groups:
        words = [normalize_label(w) for w in group if normalize_label(w)]
        for w in words:
            mapping[w] = words[0]
    return mapping


class SynonymGroups:
    """Label → group, either one grouping for all samples or one per sample.

    ``for_sample(id)`` returns the mapping to use, or None when per-sample groupings
    have no entry for that id (MERTools skips such samples; so do we, and report them).
    """

    def __init__(
        self,
        shared: Mapping[str, str] | None = None,
        per_sample: Mapping[str, Mapping[str, str]] | None = None,
    ):
        if (shared is None) == (per_sample is None):
            raise ValueError("give exactly one of shared / per_sample groupings")
        self.shared = dict(shared) if shared is not None else None
        self.per_sample = (
            {k: dict(v) for k, v in per_sample.items()} if per_sample is not None else None
        )

    @classmethod
    def none(cls) -> "SynonymGroups":
        """No grouping: every label is its own group."""
        return cls(shared={})

    @classmethod
    def from_obj(cls, obj: Any) -> "SynonymGroups":
        """Build from a parsed synonyms file.

        Accepted shapes:
            ``{"joyful": "happy", ...}``              one grouping, label → group;
            ``[["happy", "joyful"], ["sad"], ...]``   one grouping, synonym lists;
            ``{"sample_1": [["happy", "joyful"], ...], ...}``  per sample (MERTools);
            per-sample values may also be list-of-lists strings.

        Raises:
            ValueError: any other shape (message says what was found).
        """
        if isinstance(obj, list):
            return cls(shared=groups_to_map(parse_group_lists(obj)))
        if not isinstance(obj, dict):
            raise ValueError(f"synonyms must be a JSON object or list, got {type(obj).__name__}")
        if not obj:
            return cls.none()
        values = list(obj.values())
        if all(isinstance(v, str) for v in values) and not any(
            v.lstrip().startswith("[") for v in values
        ):
            return cls(shared={normalize_label(k): normalize_label(v) for k, v in obj.items()})
        per: dict[str, dict[str, str]] = {}
        for sid, groups in obj.items():
            try:
                per[str(sid)] = groups_to_map(parse_group_lists(groups))
            except ValueError as e:
                raise ValueError(f"synonyms for {sid!r}: {e}") from None
        return cls(per_sample=per)

    def for_sample(self, sample_id: str) -> dict[str, str] | None:
        if self.shared is not None:
            return self.shared
        return self.per_sample.get(sample_id)


# --------------------------------------------------------------------- classification
@dataclass
class ClassificationResult:
    """uar, war: fractions in [0, 1]; n: gold samples; classes: gold classes (sorted,
    or the given order); columns: confusion columns (classes, then other predicted
    labels, then COL_UNPARSED / COL_MISSING when they occur); confusion: (len(classes),
    len(columns)) counts, rows = gold; recall: per class; missing: gold ids without a
    prediction; extra: predicted ids not in gold (ignored)."""

    uar: float
    war: float
    n: int
    classes: list[str]
    columns: list[str]
    confusion: np.ndarray
    recall: dict[str, float]
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)


def classification_metrics(
    gold: Mapping[str, str],
    pred: Mapping[str, str | None],
    classes: Sequence[str] | None = None,
) -> ClassificationResult:
    """UAR and WAR of predicted labels against gold labels.

    Args:
        gold: id → gold label. Must not be empty.
        pred: id → predicted label (None = the answer named no option). Ids missing
            here count as wrong; ids not in gold are ignored (and listed).
        classes: class order for the matrix; defaults to the sorted gold labels. Gold
            labels outside it raise.

    Labels are compared after ``normalize_label``.
    """
    if not gold:
        raise ValueError("no gold labels")
    g = {sid: normalize_label(lab) for sid, lab in gold.items()}
    if any(not lab for lab in g.values()):
        raise ValueError(f"empty gold label for {[s for s, lab in g.items() if not lab][:5]}")
    if classes is None:
        cls = sorted(set(g.values()))
    else:
        cls = [normalize_label(c) for c in classes]
        unknown = sorted(set(g.values()) - set(cls))
        if unknown:
            raise ValueError(f"gold labels {unknown} are not in classes {cls}")
    missing = [sid for sid in g if sid not in pred]
    extra = [sid for sid in pred if sid not in g]

    predicted: dict[str, str] = {}
    for sid in g:
        if sid not in pred:
            predicted[sid] = COL_MISSING
        elif pred[sid] is None or not normalize_label(pred[sid]):
            predicted[sid] = COL_UNPARSED
        else:
            predicted[sid] = normalize_label(pred[sid])
    others = sorted({p for p in predicted.values() if p not in cls} - {COL_UNPARSED, COL_MISSING})
    columns = cls + others + [c for c in (COL_UNPARSED, COL_MISSING) if c in predicted.values()]
    col_index = {c: j for j, c in enumerate(columns)}
    row_index = {c: i for i, c in enumerate(cls)}
    confusion = np.zeros((len(cls), len(columns)), dtype=np.int64)
    for sid, lab in g.items():
        confusion[row_index[lab], col_index[predicted[sid]]] += 1

    support = confusion.sum(axis=1)
    correct = np.array([confusion[i, i] for i in range(len(cls))])
    present = support > 0  # a class given in `classes` but absent from gold has no recall
    recall = {c: float(correct[i] / support[i]) for i, c in enumerate(cls) if present[i]}
    uar = float(np.mean([recall[c] for c in recall]))
    war = float(correct.sum() / support.sum())
    return ClassificationResult(uar, war, len(g), cls, columns, confusion, recall, missing, extra)


def save_confusion_png(result: ClassificationResult, path: str | Path, title: str = "") -> Path:
    """Write the confusion matrix (rows gold, columns predicted, row-normalised colour,
    counts written in the cells) as a PNG. Uses matplotlib's Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = result.confusion
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    w = min(FIG_MAX_INCH, max(FIG_MIN_INCH, FIG_INCH_PER_CLASS * len(result.columns) + 2))
    h = min(FIG_MAX_INCH, max(FIG_MIN_INCH, FIG_INCH_PER_CLASS * len(result.classes) + 1.5))
    fig, ax = plt.subplots(figsize=(w, h))
    try:
        ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(result.columns)), result.columns, rotation=45, ha="right")
        ax.set_yticks(range(len(result.classes)), result.classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                            color="white" if frac[i, j] > 0.5 else "black", fontsize=8)
        ax.set_title(title or f"UAR {100 * result.uar:.2f}%  WAR {100 * result.war:.2f}%  "
                     f"n={result.n}")
        fig.tight_layout()
        path = save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
    return path


# -------------------------------------------------------------------------- EMER-OV
@dataclass
class OpenSetResult:
    """precision, recall, avg: fractions; n: samples scored; per_sample: id →
    (precision, recall); missing: scored ids with no prediction line (scored as empty);
    no_groups: gold ids skipped because per-sample groupings lack them; extra:
    predicted ids not in gold (ignored)."""

    precision: float
    recall: float
    avg: float
    n: int
    per_sample: dict[str, tuple[float, float]]
    missing: list[str] = field(default_factory=list)
    no_groups: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)


def sample_overlap(gold: Sequence[str], pred: Sequence[str], mapping: Mapping[str, str]) -> tuple[float, float]:
    """(precision, recall) of one sample after mapping labels to groups.

    Raises:
        ValueError: empty gold set (recall would be undefined).
    """
    g = {mapping.get(w, w) for w in (normalize_label(x) for x in gold) if w}
    p = {mapping.get(w, w) for w in (normalize_label(x) for x in pred) if w}
    if not g:
        raise ValueError("empty gold label set")
    if not p:
        return 0.0, 0.0
    hit = len(g & p)
    return hit / len(p), hit / len(g)


def openset_metrics(
    gold: Mapping[str, Sequence[str]],
    pred: Mapping[str, Sequence[str]],
    groups: SynonymGroups | None = None,
) -> OpenSetResult:
    """EMER-OV precision/recall (see module doc).

    Args:
        gold: id → gold labels (non-empty per sample).
        pred: id → predicted labels; a gold id absent here scores as an empty
            prediction (0, 0) and is listed in ``missing``.
        groups: synonym groups; None = every label is its own group.

    Raises:
        ValueError: no gold samples, no sample with groupings, or an empty gold set.
    """
    if not gold:
        raise ValueError("no gold samples")
    groups = groups or SynonymGroups.none()
    per: dict[str, tuple[float, float]] = {}
    missing, no_groups = [], []
    for sid, gl in gold.items():
        mapping = groups.for_sample(sid)
        if mapping is None:
            no_groups.append(sid)
            continue
        if sid not in pred:
            missing.append(sid)
        try:
            per[sid] = sample_overlap(gl, pred.get(sid, ()), mapping)
        except ValueError as e:
            raise ValueError(f"gold sample {sid!r}: {e}") from None
    if not per:
        raise ValueError("no gold sample has synonym groups; wrong synonyms file?")
    # np.mean over the list in gold order: the same summation MERTools does
    precision = float(np.mean([p for p, _ in per.values()]))
    recall = float(np.mean([r for _, r in per.values()]))
    avg = float(np.mean([precision, recall]))
    extra = [sid for sid in pred if sid not in gold]
    return OpenSetResult(precision, recall, avg, len(per), per, missing, no_groups, extra)
