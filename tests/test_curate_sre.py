"""The SRE run end to end: real clips (tests.media), live's face detector and tracker, a
tiny random Whisper built with transformers, and a real OpenAI-compatible HTTP server on
127.0.0.1 whose answers are scripted by the request's content."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from live.contract.cli import EXIT_USAGE
from model.data.curate import merge as merge_cli
from model.data.curate import sre
from model.data.curate.stages import CONSISTENCY_PROMPT, FACE_PROMPT, SCENE_PROMPT
from model.data.manifest import TASK_EMOTION_REASON, read_manifest
from tests.locks import hold_lock
from tests.media import cached_clip
from tests.openai_server import Fail, Hang, OpenAIServer, n_audio, n_images, text

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(size=(320, 240), face_scale=150, speech=((0.2, "hello"),))
REVIEW = {"happy": '{"score": 8}', "sad": '{"score": 2}', "angry": "I would say seven."}


def kind(r: dict) -> str:
    t = text(r)
    for name, marker in (("scene", SCENE_PROMPT[:40]), ("face", FACE_PROMPT[:40]),
                         ("consistency", CONSISTENCY_PROMPT[:40]), ("review", "ground-truth emotion label")):
        if marker in t:
            return name
    return "audio" if n_audio(r) else "?"


def label_of(r: dict) -> str:
    return text(r).split('label is "', 1)[1].split('"', 1)[0]


def answer(r: dict):
    k = kind(r)
    if k == "scene":
        return f"A person in a plain green room ({n_images(r)} frames)."
    if k == "face":
        return "The eyebrows rise and the corners of the mouth lift into a smile."
    if k == "audio":
        return "A calm, bright voice."
    if k == "consistency":
        if "(3 frames)" in text(r):  # the 3 s clip: its cues disagree
            return json.dumps({"explanation": "", "consistent": False, "reason": "the voice contradicts the face",
                               "labels": [], "intensity": 0.0})
        return ('```json\n{"explanation": "He smiles and his voice is bright, so he is pleased.", '
                '"consistent": true, "reason": "face and voice agree", "labels": ["Pleased", "cheerful"], '
                '"intensity": 0.6}\n```')
    if k == "review":
        label = label_of(r)
        if label == "fear":  # non-JSON first, fixed on the retry that quotes the error
            return '{"score": 6}' if len(r["messages"]) > 1 else "six"
        if label == "disgust":
            return Fail(500)
        if label == "surprise":
            return Hang(3)
        return REVIEW[label]
    return "?"


def build_tiny_whisper(folder: Path) -> Path:
    """A random tiny Whisper with a real (byte-level, offline) tokenizer and processor."""
    import torch
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor, WhisperTokenizer)
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    vocab["<|endoftext|>"] = len(vocab)
    langs = ("en", "de")
    tok = WhisperTokenizer(vocab=vocab, merges=[])
    tok.add_special_tokens({"additional_special_tokens": [
        "<|startoftranscript|>", *(f"<|{x}|>" for x in langs), "<|translate|>", "<|transcribe|>",
        "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]})
    ids = tok.convert_tokens_to_ids
    eot, sot = ids("<|endoftext|>"), ids("<|startoftranscript|>")
    cfg = WhisperConfig(vocab_size=len(tok), num_mel_bins=80, d_model=32, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                        decoder_ffn_dim=64, max_target_positions=16, decoder_start_token_id=sot,
                        eos_token_id=eot, pad_token_id=eot, bos_token_id=eot)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot, max_length=16, is_multilingual=True,
        lang_to_id={f"<|{x}|>": ids(f"<|{x}|>") for x in langs},
        task_to_id={"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")},
        no_timestamps_token_id=ids("<|notimestamps|>"))
    model.save_pretrained(folder)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tok).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Clips, a labelled manifest, a tiny Whisper and the scripted server."""
    tmp = tmp_path_factory.mktemp("curate")
    a = cached_clip("curate_a", seconds=2.0, **SMALL)["path"]
    b = cached_clip("curate_b", seconds=3.0, moving=False, **SMALL)["path"]
    noface = cached_clip("curate_noface", seconds=2.0, face=False, **SMALL)["path"]
    noaudio = cached_clip("curate_noaudio", seconds=2.0, audio=False, **SMALL)["path"]
    broken = tmp / "broken.mp4"
    broken.write_text("not a video")
    rows = [("dfew/kept", a, "happy"), ("dfew/low", a, "sad"), ("mafw/incons", b, "happy"),
            ("mafw/retried", a, "fear"), ("dfew/nonjson", a, "angry"), ("dfew/http", a, "disgust"),
            ("dfew/timeout", a, "surprise"), ("dfew/noface", noface, "happy"),
            ("dfew/noaudio", noaudio, "happy"), ("dfew/missing", str(tmp / "gone.mp4"), "happy"),
            ("dfew/broken", str(broken), "happy")]
    manifest = tmp / "labels.jsonl"
    manifest.write_text("".join(json.dumps({
        "id": sid, "video": str(v), "task": "emotion_cls", "label": lab, "conversations": [
            {"role": "user", "content": "Which emotion?"}, {"role": "assistant", "content": f"{lab}."}]}) + "\n"
        for sid, v, lab in rows))
    server = OpenAIServer(answer)
    whisper = build_tiny_whisper(tmp / "whisper")
    yield {"tmp": tmp, "manifest": manifest, "server": server, "whisper": whisper, "ids": [r[0] for r in rows]}
    server.close()


def args(w, out, *extra, asr=None):
    u = w["server"].url
    return [str(w["manifest"]), "--out", str(out), "--vlm", u, "--vlm-model", "vlm", "--llm", u,
            "--llm-model", "llm", "--asr", str(asr or w["whisper"]), "--alm", u, "--alm-model", "alm",
            "--retries", "0", "--timeout", "0.5", "--face-crops", "4", "--device", "cpu", *extra]


def records(out: Path, name: str) -> list[dict]:
    p = out / name
    return [json.loads(x) for x in p.read_text().splitlines()] if p.is_file() else []


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def full_run(world):
    out = world["tmp"] / "full"
    rc = sre.main(args(world, out, "--concurrency", "3"))
    assert rc == 0
    return out


def test_kept_rejected_and_failed(full_run, world, capsys):
    kept = {r["id"]: r for r in records(full_run, "sre.jsonl")}
    assert set(kept) == {"dfew/kept", "mafw/retried"}
    k = kept["dfew/kept"]
    assert k["task"] == TASK_EMOTION_REASON and k["score"] == 8 and k["intensity"] == 0.6
    assert k["labels"] == ["pleased", "cheerful"] and k["source_label"] == "happy" and k["source"] == "dfew"
    assert k["conversations"][1]["content"].endswith("Open-vocabulary labels: pleased, cheerful.")
    rejected = {r["id"]: r for r in records(full_run, "rejected.jsonl")}
    assert rejected == {
        "dfew/low": {"id": "dfew/low", "stage": "review", "reason": "score 2 < threshold 5", "score": 2},
        "mafw/incons": {"id": "mafw/incons", "stage": "consistency",
                        "reason": "the voice contradicts the face", "score": None}}
    failed = {r["id"]: r["error"] for r in records(full_run, "failed.jsonl")}
    assert set(failed) == {"dfew/nonjson", "dfew/http", "dfew/timeout", "dfew/noface", "dfew/noaudio",
                           "dfew/missing", "dfew/broken"}
    assert failed["dfew/nonjson"].startswith("review: ") and "after one retry" in failed["dfew/nonjson"]
    assert "HTTP 500" in failed["dfew/http"] and "timed out" in failed["dfew/timeout"]
    assert failed["dfew/noface"] == "face: no face found in the clip"
    assert failed["dfew/noaudio"] == "audio: no audio track"
    assert failed["dfew/missing"].startswith("video: ") and "not found" in failed["dfew/missing"]
    assert failed["dfew/broken"].startswith("video: ") and "cannot read" in failed["dfew/broken"]
    clues = {r["id"]: r for r in records(full_run, "clues.jsonl")}
    assert sorted(clues) == sorted(world["ids"])  # one line per clip
    c = clues["dfew/kept"]["cues"]
    assert c["scene"] == "A person in a plain green room (2 frames)." and c["audio_caption"] == "A calm, bright voice."
    assert isinstance(c["transcript"], str) and c["language"] in ("en", "de")  # the tiny Whisper ran
    stats = json.loads((full_run / "stats.json").read_text())
    assert (stats["clips"], stats["kept"], stats["rejected"], stats["failed"]) == (11, 2, 2, 7)
    assert stats["by_source"]["dfew"]["scores"]["2"] == 1 and stats["by_source"]["mafw"]["scores"]["6"] == 1
    assert (full_run / "scores.png").stat().st_size > 1000


def test_manifest_read_by_trainer(full_run):
    from model.train.dataset import TrainDataset

    samples = read_manifest(full_run / "sre.jsonl")
    ds = TrainDataset(samples, phase=3, base_dir=full_run)
    item = ds[0]
    assert item["conversation"][1]["content"] == samples[0]["conversations"][1]["content"]
    assert item["clip"] is not None


def test_rerun_skips_finished_and_retries_failed(full_run, world, capsys):
    s = world["server"]
    before = list(s.requests)
    assert sre.main(args(world, full_run)) == 0
    new = s.requests[len(before):]
    assert not [r for r in new if kind(r) == "review" and label_of(r) in ("happy", "sad", "fear")]
    assert all(kind(r) in ("review",) for r in new)  # cues of retried clips came from the cache
    for name in ("sre.jsonl", "rejected.jsonl", "failed.jsonl", "clues.jsonl"):
        ids = [r["id"] for r in records(full_run, name)]
        assert len(ids) == len(set(ids)), name
    assert last_json(capsys.readouterr().out)["clips"] == 11


def test_shards_and_merge_equal_one_run(full_run, world, capsys):
    outs = [world["tmp"] / f"shard{i}" for i in range(2)]
    for i, out in enumerate(outs):
        assert sre.main(args(world, out, "--shard", f"{i}/2")) == 0
    sizes = [len(records(o, "clues.jsonl")) for o in outs]
    assert sum(sizes) == 11 and min(sizes) > 0
    merged = world["tmp"] / "merged"
    assert merge_cli.main([str(o) for o in outs] + ["--out", str(merged)]) == 0
    assert last_json(capsys.readouterr().out) == {"clips": 11, "kept": 2, "rejected": 2, "failed": 7, "seconds": 0.0}
    for name in ("sre.jsonl", "rejected.jsonl"):
        assert records(merged, name) == sorted(records(full_run, name), key=lambda r: r["id"])
    assert sorted(r["id"] for r in records(merged, "failed.jsonl")) == sorted(
        r["id"] for r in records(full_run, "failed.jsonl"))


def test_dry_run_counts_and_calls_nothing(world, capsys):
    n = world["server"].count()
    out = world["tmp"] / "dry"
    assert sre.main(args(world, out, "--dry-run", "--max-frames", "2")) == 0
    est = last_json(capsys.readouterr().out)
    # 11 clips, 2 unreadable; 9 × (scene, face, audio caption, consistency, review)
    assert (est["clips"], est["unreadable"], est["calls"]) == (11, 2, 45)
    assert est["images"] == 9 * (2 + 4) and est["tokens_in_est"] > 0
    assert world["server"].count() == n and not out.exists()


def test_endpoint_down_is_one_line_usage_error(world, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    a = args(world, world["tmp"] / "down", asr="none")
    a[a.index("--llm") + 1] = f"http://127.0.0.1:{port}"
    assert sre.main(a) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --llm ") and "not reachable" in err[0]
    assert not (world["tmp"] / "down").exists()


def test_resume_after_kill_9(world, tmp_path):
    """A real run killed with SIGKILL once some clips are written, then resumed."""
    slow = OpenAIServer(lambda r: Hang(0.6, '{"score": 9}') if kind(r) == "review" and label_of(r) == "surprise" else answer(r))
    ids = [f"dfew/k{i:02d}" for i in range(12)]
    clip = cached_clip("curate_a", seconds=2.0, **SMALL)["path"]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({
        "id": sid, "video": str(clip), "task": "emotion_cls", "label": "surprise" if i % 2 else "happy",
        "conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n"
        for i, sid in enumerate(ids)))
    out = tmp_path / "out"
    cmd = [str(manifest), "--out", str(out), "--vlm", slow.url, "--vlm-model", "v", "--llm", slow.url,
           "--llm-model", "l", "--asr", "none", "--face-crops", "2", "--retries", "0", "--timeout", "5",
           "--concurrency", "2"]
    try:
        proc = subprocess.Popen([sys.executable, "-m", "model.data.curate", "sre", *cmd], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if len(records(out, "sre.jsonl")) + len(records(out, "rejected.jsonl")) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        first = {r["id"] for r in records(out, "sre.jsonl")}
        assert 3 <= len(first) < len(ids)
        with open(out / "sre.jsonl", "a") as f:
            f.write('{"id": "dfew/torn", "vid')  # what a kill mid-write would leave
        assert sre.main(cmd) == 0
    finally:
        slow.close()
    kept = [r["id"] for r in records(out, "sre.jsonl")]
    assert sorted(kept) == ids and len(set(kept)) == len(kept)  # all there, none twice
    assert first <= set(kept)
    clues = [r["id"] for r in records(out, "clues.jsonl")]
    assert sorted(clues) == ids


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_merge_reads_its_inputs_only_and_refuses_a_running_shard(full_run, world, tmp_path, capsys):
    """A shard killed mid-write (torn last line, a clues line without its outcome) is
    merged as a resume would see it, and its files stay byte for byte as they were; a
    shard whose run still holds its lock is refused in one line naming the process."""
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(full_run, a)
    b.mkdir()
    shutil.copy(full_run / "run.json", b / "run.json")
    with open(a / "clues.jsonl", "a") as f:
        f.write(json.dumps({"id": "dfew/orphan", "source": "dfew"}) + "\n")  # killed before its outcome
    with open(a / "sre.jsonl", "a") as f:
        f.write('{"id": "dfew/torn", "vid')  # killed mid-write
    before = _snapshot(a)
    merged = tmp_path / "merged"
    assert merge_cli.main([str(a), str(b), "--out", str(merged)]) == 0
    assert _snapshot(a) == before  # nothing cut, nothing rewritten, no .torn, no lock file
    for name in ("sre.jsonl", "rejected.jsonl", "failed.jsonl", "clues.jsonl"):
        assert records(merged, name) == sorted(records(full_run, name), key=lambda r: r["id"]), name
    capsys.readouterr()

    holder = hold_lock(b)
    try:
        assert merge_cli.main([str(a), str(b), "--out", str(tmp_path / "m2")]) == EXIT_USAGE
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"pid {holder.pid}" in err[0] and str(b) in err[0], err
        assert not (tmp_path / "m2").exists()
        # a second sre run on a folder another process writes is refused the same way
        assert sre.main(args(world, b)) == EXIT_USAGE
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"pid {holder.pid}" in err[0], err
    finally:
        holder.kill()
        holder.wait(30)
    # the owner is gone: its stale lock no longer blocks the merge
    assert merge_cli.main([str(a), str(b), "--out", str(tmp_path / "m3")]) == 0
