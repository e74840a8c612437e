"""Manifest format: round trip, and loud errors with file:line."""
import json

import pytest

from model.data.manifest import (
    ManifestError, make_sample, read_jsonl, read_manifest, resolve_media, write_manifest,
)


def _sample(i, **kw):
    return make_sample(f"s{i}", "emotion_cls", "Which emotion? happy, sad.", "sad.",
                       video=f"v/{i}.mp4", **kw)


def test_round_trip(tmp_path):
    samples = [_sample(1), _sample(2, label="sad", options=["happy", "sad"]),
               make_sample("a1", "asr", "Write it down.", "Hello.", video=None, audio="a.wav")]
    path = tmp_path / "m.jsonl"
    assert write_manifest(samples, path) == 3
    back = read_manifest(path)
    assert back == samples
    assert back[1]["conversations"][1] == {"role": "assistant", "content": "sad."}
    assert resolve_media(back[2], tmp_path) == (None, tmp_path / "a.wav")
    assert resolve_media({"video": "/abs/x.mp4"}, tmp_path) == (tmp_path / "/abs/x.mp4", None)


@pytest.mark.parametrize("line, msg", [
    ("{not json", "m.jsonl:2: invalid JSON"),
    ("[1, 2]", "m.jsonl:2: expected a JSON object"),
    ('{"id": "x", "video": "v.mp4", "task": "nope", "conversations": []}', "m.jsonl:2.*task"),
    ('{"id": "x", "video": null, "task": "asr", "conversations": []}', "needs a 'video' or an 'audio'"),
    ('{"id": "s1", "video": "v.mp4", "task": "asr", "conversations": '
     '[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}', "duplicate id"),
    ('{"id": "x", "video": "v.mp4", "task": "asr", "conversations": '
     '[{"role": "assistant", "content": "q"}, {"role": "user", "content": "a"}]}', "turn 0"),
    ('{"id": "x", "video": "v.mp4", "task": "asr", "color": 1, "conversations": []}', "unknown keys"),
])
def test_errors_name_file_and_line(tmp_path, line, msg):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(_sample(1)) + "\n" + line + "\n")
    with pytest.raises(ManifestError, match=msg):
        read_manifest(path)


def test_missing_file_and_blank_lines(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_jsonl(tmp_path / "nope.jsonl")
    p = tmp_path / "x.jsonl"
    p.write_text('\n{"id": "a"}\n\n{"id": "b"}\n')
    assert [r["id"] for r in read_jsonl(p)] == ["a", "b"]


def test_write_rejects_invalid_and_duplicates_without_writing(tmp_path):
    path = tmp_path / "m.jsonl"
    with pytest.raises(ManifestError, match="duplicate"):
        write_manifest([_sample(1), _sample(1)], path)
    assert not path.exists()


def test_torn_last_line_is_skipped_only_when_asked(tmp_path):
    """A writer's unfinished last line, cut inside a UTF-8 character: a reader of a folder
    it does not own ends quietly before it; any other reader gets the line's number."""
    from model.data.manifest import ManifestError, iter_jsonl

    p = tmp_path / "sre.jsonl"
    p.write_bytes('{"id": "a"}\n{"id": "é'.encode("utf-8")[:-1])
    assert [o for _, o in iter_jsonl(p, torn_ok=True)] == [{"id": "a"}]
    with pytest.raises(ManifestError, match=r"sre.jsonl:2: not UTF-8"):
        list(iter_jsonl(p))
