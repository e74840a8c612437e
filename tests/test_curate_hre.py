"""HRE flow without a browser: selection (even per source, disjoint from SRE,
deterministic), the agreement report (kappa computed by hand here) and the export read
back by the manifest reader and the trainer's dataset.

Fixtures (manifest, clues.jsonl, sre.jsonl) are written here in the formats of
``model.data.curate`` (docs/curation.md), not produced by the SRE stages.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from model.data.curate import agreement as A
from model.data.curate.__main__ import main as curate_main
from model.data.curate import selection as S
from model.data.curate.review_pool import ReviewLog, load_candidates
from model.data.manifest import read_manifest
from model.net.templates import reasoning_answer
from tests.media import cached_clip

INSTRUCTION = "What can we deduce about the character's emotional state? Please elaborate."


def _cls(sid: str, label: str = "happy") -> dict:
    return {"id": sid, "video": f"v/{sid.replace('/', '_')}.mp4", "task": "emotion_cls",
            "conversations": [{"role": "user", "content": "Which emotion? happy, sad."},
                              {"role": "assistant", "content": f"{label}."}],
            "label": label, "options": ["happy", "sad"]}


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_cli(capsys, *argv: str) -> SimpleNamespace:
    """``python -m model.data.curate ARGV`` in this process: returncode, stdout, stderr."""
    capsys.readouterr()
    code = curate_main(list(argv))
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


# ----------------------------------------------------------------------- selection
def _pool(tmp_path: Path) -> tuple[Path, Path, set[str]]:
    """A manifest of three sources (dfew 30, mafw 12, caer 4 clips) and an SRE run that
    processed every third dfew/mafw clip."""
    rows = [_cls(f"{src}/{i:03d}") for src, n in (("dfew", 30), ("mafw", 12), ("caer", 4)) for i in range(n)]
    rows[5]["source"] = "mer2024"  # an explicit source field wins over the id prefix
    man = _write(tmp_path / "all.jsonl", rows)
    done = {r["id"] for r in rows if r["id"].split("/")[0] in ("dfew", "mafw") and int(r["id"][-3:]) % 3 == 0}
    _write(tmp_path / "sre" / "clues.jsonl", [{"id": i, "explanation": "x", "labels": ["a"]} for i in sorted(done)])
    return man, tmp_path / "sre", done


def test_selection_even_disjoint_and_deterministic(tmp_path, capsys):
    man, sre, done = _pool(tmp_path)
    out = tmp_path / "sel.jsonl"
    r = run_cli(capsys, "hre-select", str(man), "--sre", str(sre), "--per-source", "6", "--out", str(out))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    sel = [json.loads(x) for x in out.read_text().splitlines()]
    ids = [s["id"] for s in sel]
    assert not set(ids) & done  # disjoint from every clip SRE processed
    assert len(set(ids)) == len(ids)
    by_src: dict[str, int] = {}
    for s in sel:
        src = s.get("source") or s["id"].split("/")[0]
        by_src[src] = by_src.get(src, 0) + 1
    # dfew: 30 - 10 in SRE - 1 moved to mer2024 = 19 ≥ 6; mafw 12 - 4 = 8 ≥ 6; caer only 4
    assert by_src == {"dfew": 6, "mafw": 6, "caer": 4, "mer2024": 1} == summary["per_source"]
    assert summary["available"]["caer"] == 4 and "caer" in r.stderr  # shortfall warned
    assert summary["excluded"] == len(done)
    man_lines = {json.loads(x)["id"]: json.loads(x) for x in man.read_text().splitlines()}
    assert all(s == man_lines[s["id"]] for s in sel)  # lines written unchanged
    # the same ids and seed in another line order give the same selection; another seed does not
    rows = list(man_lines.values())[::-1]
    again, _ = S.select(rows, done, 6, seed=0)
    assert [s["id"] for s in again] == ids
    other, _ = S.select(rows, done, 6, seed=1)
    assert sorted(s["id"] for s in other) != sorted(ids)
    # an existing --out is refused without --overwrite
    r2 = run_cli(capsys, "hre-select", str(man), "--sre", str(sre), "--out", str(out))
    assert r2.returncode == 2 and "--overwrite" in r2.stderr
    r3 = run_cli(capsys, "hre-select", str(man), "--sre", str(tmp_path / "nope"), "--out", str(tmp_path / "x.jsonl"))
    assert r3.returncode == 2 and "clues.jsonl" in r3.stderr


# --------------------------------------------------------------- pool, agreement
CANDIDATES = [  # id, explanation, labels
    ("dfew/001", "She smiles broadly and laughs.", ["happy", "excited"]),
    ("dfew/002", "His brows are drawn together.", ["angry"]),
    ("mafw/003", "A calm voice and a relaxed face.", ["neutral", "calm"]),
    ("mafw/004", "Tears run down her cheeks.", ["sad"]),
    ("caer/005", "He steps back with wide eyes.", ["fear"]),
    ("caer/006", "Her shoulders drop and she sighs.", ["sad", "tired"]),
    ("caer/007", "He frowns at the screen.", ["annoyed"]),
]


def make_review_pool(root: Path, video: str | Path) -> Path:
    """A CAND_DIR as ``curate sre --threshold 0`` writes it: sre.jsonl + clues.jsonl,
    every clip's video a copy of ``video`` under CAND_DIR/videos/."""
    (root / "videos").mkdir(parents=True)
    sre, clues = [], []
    for sid, expl, labels in CANDIDATES:
        name = sid.replace("/", "_") + ".mp4"
        shutil.copy(video, root / "videos" / name)
        src = sid.split("/")[0]
        sre.append({"id": sid, "video": f"videos/{name}", "task": "emotion_reason",
                    "conversations": [{"role": "user", "content": INSTRUCTION},
                                      {"role": "assistant", "content": reasoning_answer(expl, labels)}],
                    "labels": labels, "score": 7, "intensity": 0.6, "source_label": labels[0], "source": src})
        clues.append({"id": sid, "video": f"videos/{name}", "source": src, "source_label": labels[0],
                      "cues": {"scene": f"scene of {sid}", "face": "face cue", "transcript": "hello",
                               "language": "en", "audio_caption": None},
                      "explanation": expl, "labels": labels, "intensity": 0.6, "consistent": True,
                      "reason": "ok", "score": 7})
    _write(root / "sre.jsonl", sre)
    _write(root / "clues.jsonl", clues)
    return root


@pytest.fixture(scope="module")
def clip_path():
    return cached_clip("hre", seconds=2.0, fps=10)["path"]


def _two_reviewers(pool: Path) -> None:
    a, b = ReviewLog(pool, "alice"), ReviewLog(pool, "bob")
    # keep/keep: 001 (A accept, B edit), 003 (both accept), 006 (both edit)
    a.add("dfew/001", "accept", CANDIDATES[0][1], CANDIDATES[0][2])
    b.add("dfew/001", "edit", "She smiles.", ["happy"])
    a.add("mafw/003", "accept", CANDIDATES[2][1], CANDIDATES[2][2])
    b.add("mafw/003", "accept", CANDIDATES[2][1], CANDIDATES[2][2])
    a.add("caer/006", "edit", "Her shoulders drop.", ["Sad", "tired"])
    b.add("caer/006", "edit", "She sighs.", ["sad", " lonely"])
    # keep/reject: 002; reject/keep: 005; reject/reject: 004
    a.add("dfew/002", "edit", "Drawn brows, tight lips.", ["angry", "tense"])
    b.add("dfew/002", "reject")
    a.add("caer/005", "reject")
    b.add("caer/005", "accept", CANDIDATES[4][1], CANDIDATES[4][2])
    a.add("mafw/004", "reject")
    b.add("mafw/004", "reject")
    a.add("caer/007", "accept", CANDIDATES[6][1], CANDIDATES[6][2])  # only alice: not compared
    a.close()
    b.close()


def test_agreement_kappa_by_hand(tmp_path, clip_path, capsys):
    pool = make_review_pool(tmp_path / "cand", clip_path)
    _two_reviewers(pool)
    # 6 clips both reviewed: table keep/keep 3, keep/reject 1, reject/keep 1, reject/reject 1
    p_o = 4 / 6
    p_a = p_b = 4 / 6  # each kept 4 of the 6
    p_e = p_a * p_b + (1 - p_a) * (1 - p_b)  # 5/9
    kappa = (p_o - p_e) / (1 - p_e)  # 0.25
    # labels on the 3 clips both kept: {happy, excited}/{happy} 1/2, identical 1, {sad, tired}/{sad, lonely} 1/3
    jac = (1 / 2 + 1 + 1 / 3) / 3
    r = run_cli(capsys, "agreement", str(pool))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    rep = json.loads(lines[-1])
    assert rep["reviewers"] == ["alice", "bob"] and rep["both_reviewed"] == 6 and rep["candidates"] == 7
    assert rep["table"] == {"keep_keep": 3, "keep_reject": 1, "reject_keep": 1, "reject_reject": 1}
    assert rep["kappa"] == pytest.approx(kappa, abs=1e-4) and kappa == pytest.approx(0.25)
    assert rep["observed_agreement"] == pytest.approx(p_o, abs=1e-4)
    assert rep["label_jaccard_mean"] == pytest.approx(jac, abs=1e-4) and rep["both_kept"] == 3
    assert rep["decisions"]["alice"] == {"accept": 3, "edit": 2, "reject": 2}
    assert "Cohen's kappa" in r.stdout and "| keep | 3 | 1 |" in r.stdout
    # kappa is undefined when both reviewers gave one and the same answer throughout
    assert A.cohen_kappa([(True, True), (True, True)])[0] is None
    assert A.cohen_kappa([(True, False), (False, True)])[0] == pytest.approx(-1.0)
    # a third reviewer: --reviewers is needed; an unknown one is named
    carol = ReviewLog(pool, "carol")
    carol.add("dfew/001", "reject")
    carol.close()
    assert run_cli(capsys, "agreement", str(pool)).returncode == 2
    r = run_cli(capsys, "agreement", str(pool), "--reviewers", "alice,dave")
    assert r.returncode == 2 and "dave" in r.stderr


def test_export_reads_back_as_training_manifest(tmp_path, clip_path, capsys):
    from model.data.preprocess import no_face_tracker
    from model.train.dataset import TrainDataset

    pool = make_review_pool(tmp_path / "cand", clip_path)
    _two_reviewers(pool)
    out = tmp_path / "export" / "hre_alice.jsonl"
    r = run_cli(capsys, "export", str(pool), "--out", str(out))
    assert r.returncode == 2 and "--reviewer" in r.stderr  # two reviewers: say whose
    r = run_cli(capsys, "export", str(pool), "--reviewer", "alice", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"exported": 5, "rejected": 2, "disagreed": 0,
                                                             "unreviewed": 0}
    samples = read_manifest(out)
    ids = [s["id"] for s in samples]
    assert ids == ["dfew/001", "dfew/002", "mafw/003", "caer/006", "caer/007"]  # the pool's order
    accepted = samples[0]
    assert accepted["conversations"][1]["content"] == reasoning_answer(*CANDIDATES[0][1:])
    edited = next(s for s in samples if s["id"] == "dfew/002")
    assert edited["conversations"][1]["content"] == reasoning_answer("Drawn brows, tight lips.", ["angry", "tense"])
    assert edited["labels"] == ["angry", "tense"] and edited["reviewer"] == "alice"
    assert edited["task"] == "emotion_reason" and edited["source"] == "dfew" and edited["source_label"] == "angry"
    assert edited["conversations"][0]["content"] == INSTRUCTION
    assert Path(edited["video"]).is_absolute() and Path(edited["video"]).is_file()
    ds = TrainDataset(read_manifest(out), 3, base_dir=out.parent, face_tracker=no_face_tracker)
    item = ds[ids.index("dfew/002")]
    assert item["clip"].has_video and item["clip"].has_audio  # the absolute video path decodes
    # --require-agreement: only clips both kept; the text of the first listed reviewer
    both = tmp_path / "hre_both.jsonl"
    r = run_cli(capsys, "export", str(pool), "--require-agreement", "--reviewers", "bob,alice", "--out", str(both))
    assert r.returncode == 0, r.stderr
    got = {s["id"]: s for s in read_manifest(both)}
    assert sorted(got) == ["caer/006", "dfew/001", "mafw/003"]
    assert got["dfew/001"]["labels"] == ["happy"] and got["dfew/001"]["reviewer"] == "bob,alice"
    assert got["caer/006"]["labels"] == ["sad", "lonely"]
    # nothing is overwritten silently
    r = run_cli(capsys, "export", str(pool), "--reviewer", "alice", "--out", str(out))
    assert r.returncode == 2 and "--overwrite" in r.stderr
    assert len(load_candidates(pool)) == len(CANDIDATES)
