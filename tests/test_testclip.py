"""`python -m live.testclip`: the clip a newcomer makes to try every stage."""
from __future__ import annotations

import json

import av
import numpy as np
import pytest

from live.contract.cli import EXIT_USAGE
from live.testclip import DEFAULT_SPEECH, main
from tests.media import clip_frames


def test_cli_writes_the_clip_it_describes(tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    assert main(["--out", str(out), "--seconds", "3", "--json"]) == 0
    truth = json.loads(capsys.readouterr().out)
    with av.open(str(out)) as c:
        video, audio = c.streams.video[0], c.streams.audio[0]
        assert (video.width, video.height) == (640, 480) and audio.rate == 16_000
        assert audio.layout.nb_channels == 1
    frames = clip_frames(out)
    assert len(frames) == truth["n_frames"] == 90
    assert truth["face"] is True and truth["size"] == [640, 480]
    (start, end), = truth["speech"]
    assert start == DEFAULT_SPEECH[0][0] and 1.5 < end < 3.0  # a 6-word sentence, clipped at 3 s
    # The face moves left -> right: the background-coloured columns shift.
    first, last = (np.abs(f.astype(int) - (70, 110, 90)).sum(-1).mean(0) > 60 for f in frames[[0, -1]])
    assert np.flatnonzero(first).mean() < np.flatnonzero(last).mean() - 100


def test_cli_without_audio_or_face(tmp_path, capsys):
    out = tmp_path / "bg.mp4"
    assert main(["--out", str(out), "--seconds", "1", "--no-audio", "--no-face"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}: 1 s, 640x480 at 30 fps, no face, no audio"
    with av.open(str(out)) as c:
        assert len(c.streams.audio) == 0
    assert np.abs(clip_frames(out).astype(int) - (70, 110, 90)).max() < 8  # background only


@pytest.mark.parametrize("args, message", [
    (["--seconds", "0"], "--seconds must be > 0"),
    (["--speech-start", "9"], "--speech-start must be in"),
    (["--size", "160x120"], "smaller than the 200 px face"),
])
def test_cli_bad_options_are_one_line_usage_errors(tmp_path, capsys, args, message):
    out = tmp_path / "x.mp4"
    assert main(["--out", str(out), *args]) == EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not out.exists()


def test_cli_refuses_to_overwrite_without_the_flag(tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"keep me")
    assert main(["--out", str(out), "--seconds", "1"]) == EXIT_USAGE
    assert capsys.readouterr().err.strip() == f"error: {out} exists (pass --overwrite to replace it)"
    assert out.read_bytes() == b"keep me"
    assert main(["--out", str(out), "--seconds", "1", "--overwrite", "--no-audio"]) == 0
    assert out.stat().st_size > 1000


def test_write_y4m_is_planar_420_with_one_header(tmp_path):
    from live.testclip import write_y4m

    frames = np.full((3, 4, 6, 3), 128, np.uint8)  # grey: Y = U = V = 128 (full range)
    data = write_y4m(frames, tmp_path / "cam.y4m", fps=10).read_bytes()
    header = b"YUV4MPEG2 W6 H4 F10:1 Ip A1:1 C420jpeg\n"
    frame_bytes = 6 * 4 * 3 // 2  # Y plane + two quarter-size chroma planes
    assert data.startswith(header) and len(data) == len(header) + 3 * (len(b"FRAME\n") + frame_bytes)
    first = np.frombuffer(data[len(header) + 6 : len(header) + 6 + frame_bytes], np.uint8)
    assert np.abs(first.astype(int) - 128).max() <= 2
    with pytest.raises(ValueError, match="even frame size"):
        write_y4m(np.zeros((1, 5, 6, 3), np.uint8), tmp_path / "odd.y4m")
