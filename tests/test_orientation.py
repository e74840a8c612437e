"""Recordings as phones make them: real files written by ffmpeg from an upright clip,
stored sideways / upside down / mirrored with a display matrix, 48 kHz stereo AAC, or
a variable frame rate. The one decode rule (live.sources) gives the upright picture,
the same faces and boxes as the original, the same speech edges and true frame times.

Mirrored matrices cannot be written by this ffmpeg's command line (5.1), so those files
get the video track header's matrix (the ``tkhd`` box) set byte for byte, which is
where a phone's muxer writes it."""
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from live.engine import Engine, EngineConfig
from live.faces import FaceTracker, default_detector, iou
from live.sources import decode_audio, display_orientation, iter_video_frames, video_times
from tests.media import cached_clip

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command")
CLIP = dict(seconds=3.0, size=(320, 240), face_scale=120)
ONE = 65536  # 1.0 in the matrix's 16.16 fixed point
MAX_PIXEL_DIFF = 4.0  # mean |RGB| difference from the original after one x264 re-encode
MIN_BOX_IOU = 0.8
SPEECH_EDGE_S = 0.05  # s


def ffmpeg(*args):
    subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, args)], check=True, timeout=120)


def set_video_matrix(path: Path, a: int, b: int, c: int, d: int) -> None:
    """Write [a b 0; c d 0; 0 0 1] (16.16) into the video track's tkhd box in place."""
    data = bytearray(path.read_bytes())
    at = 0
    while True:
        at = data.index(b"tkhd", at + 1)
        version = data[at + 4]
        matrix = at + 4 + 4 + (32 if version == 1 else 20) + 8 + 8  # after ids, times, layer..volume
        width = struct.unpack(">I", data[matrix + 36 : matrix + 40])[0]
        if width:  # the video track (an audio track's tkhd has width 0)
            break
    data[matrix : matrix + 36] = struct.pack(">9i", a, b, 0, c, d, 0, 0, 0, 1 << 30)
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("orient")
    up = Path(cached_clip("orient", **CLIP)["path"])
    out = {"up": up}
    enc = ["-c:v", "libx264", "-crf", "12", "-c:a", "aac", "-ar", "48000", "-ac", "2"]
    # rotate=N metadata: ffmpeg shows the stored picture turned N degrees counter-clockwise
    for name, vf, rotate in (("rot90", "transpose=1", 90), ("rot180", "hflip,vflip", 180),
                             ("rot270", "transpose=2", 270)):
        ffmpeg("-i", up, "-vf", vf, *enc, d / "stored.mp4")
        ffmpeg("-i", d / "stored.mp4", "-c", "copy", "-metadata:s:v:0", f"rotate={rotate}", d / f"{name}.mp4")
        out[name] = d / f"{name}.mp4"
    for name, vf, m in (("mirror", "hflip", (-ONE, 0, 0, ONE)), ("transposed", "transpose=0", (0, ONE, ONE, 0))):
        # transpose=0 (a counter-clockwise turn, then a vertical flip) is the plain transpose
        ffmpeg("-i", up, "-vf", vf, *enc, d / f"{name}.mp4")
        set_video_matrix(d / f"{name}.mp4", *m)
        out[name] = d / f"{name}.mp4"
    ffmpeg("-i", up, "-c:v", "libx264", "-crf", "12", "-c:a", "aac", "-ar", "48000", "-ac", "2", d / "plain48k.mp4")
    out["plain48k"] = d / "plain48k.mp4"
    # another rate and layout: 44.1 kHz 5.1 (the speech copied to every channel)
    ffmpeg("-i", up, "-c:v", "copy", "-c:a", "aac", "-ar", "44100", "-ac", "6", d / "surround.mp4")
    out["surround"] = d / "surround.mp4"
    # variable frame rate: the frames between 1.0 and 1.5 s are gone, the rest keep their times
    ffmpeg("-i", up, "-vf", "select='not(between(t,1.0,1.5))'", "-vsync", "vfr", "-c:v", "libx264",
           "-crf", "12", "-an", d / "vfr.mp4")
    out["vfr"] = d / "vfr.mp4"
    return out


def frames(path):
    return [f for f in iter_video_frames(path)]


@pytest.mark.parametrize("name", ["rot90", "rot180", "rot270", "mirror", "transposed"])
def test_pictures_are_upright(files, name):
    ref = frames(files["plain48k"])
    got = frames(files[name])
    assert display_orientation(next(iter(_av_frames(files[name])))) is not None  # the file says it
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert (g.width, g.height) == (r.width, r.height) == (320, 240)
        assert g.t == pytest.approx(r.t, abs=1e-3)
    diffs = [np.abs(g.rgb().astype(int) - r.rgb().astype(int)).mean() for g, r in zip(got[::10], ref[::10])]
    assert max(diffs) < MAX_PIXEL_DIFF, diffs


def _av_frames(path):
    import av

    with av.open(str(path)) as c:
        yield from c.decode(video=0)


def run_engine(path):
    boxes, speech = {}, []

    def on_frame(frame, faces):
        boxes[round(frame.t, 3)] = [f.box for f in faces]

    Engine(path_source(path), None, EngineConfig(every_window=True), tracker=FaceTracker(default_detector()),
           on_frame=on_frame, on_segment=speech.append).run()
    return boxes, speech


def path_source(path):
    from live.sources import FileSource

    return FileSource(path)


def test_sideways_phone_video_gives_the_same_faces_boxes_and_speech(files):
    ref_boxes, ref_speech = run_engine(files["up"])
    got_boxes, got_speech = run_engine(files["rot90"])
    assert ref_boxes.keys() == got_boxes.keys()
    with_face = [t for t, b in ref_boxes.items() if b]
    assert len(with_face) > 0.8 * len(ref_boxes)
    for t in with_face:
        assert len(got_boxes[t]) == len(ref_boxes[t]) == 1
        assert iou(np.asarray(got_boxes[t][0]), np.asarray(ref_boxes[t][0])) > MIN_BOX_IOU, t
    # 48 kHz stereo AAC: mixed to mono, resampled to 16 kHz, the same speech edges
    assert len(got_speech) == len(ref_speech) >= 1
    for g, r in zip(got_speech, ref_speech):
        assert abs(g.start - r.start) <= SPEECH_EDGE_S and abs(g.end - r.end) <= SPEECH_EDGE_S


@pytest.mark.parametrize("name", ["plain48k", "surround"])
def test_any_rate_and_layout_decodes_like_the_original(files, name):
    ref = decode_audio(files["up"])
    got = decode_audio(files[name])
    assert abs(got.size - ref.size) <= 0.05 * 16000  # AAC priming/padding: tens of ms at most
    n = min(ref.size, got.size)
    env = lambda x: np.convolve(np.abs(x[:n]), np.ones(320) / 320, mode="same")  # 20 ms envelope
    assert np.corrcoef(env(ref), env(got))[0, 1] > 0.9


def test_variable_frame_rate_keeps_true_times(files):
    ref = video_times(files["up"])
    got = video_times(files["vfr"])
    kept = ref[(ref < 1.0 - 1e-6) | (ref > 1.5 + 1e-6)]
    assert got.size == kept.size < ref.size
    np.testing.assert_allclose(got, kept, atol=2e-3)
    np.testing.assert_allclose([f.t for f in frames(files["vfr"])], got, atol=2e-3)


def test_training_and_file_analysis_paths_see_it_upright(files):
    from live.window import file_window

    ref, got = file_window(files["plain48k"], 0.5, 2.5), file_window(files["rot270"], 0.5, 2.5)
    g, r = got.frames, ref.frames
    assert g.shape == r.shape == (8, 240, 320, 3)
    assert np.abs(g.astype(int) - r.astype(int)).mean() < MAX_PIXEL_DIFF


def test_a_large_sideways_frame_is_scaled_then_turned():
    import av

    from live.frames import VideoFrame

    img = np.zeros((1080, 1920, 3), np.uint8)
    img[:108, :192] = (255, 0, 0)  # a red block in the stored picture's top-left corner
    frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
    vf = VideoFrame(0.0, frame, orient=(True, True, False))  # = np.rot90(stored, 1), ccw
    assert (vf.width, vf.height, vf.scale) == (360, 640, 3.0)
    rgb = vf.rgb()
    assert rgb.shape == (640, 360, 3)
    # turned counter-clockwise, the top-left corner is at the bottom-left
    assert rgb[-20:, :20, 0].mean() > 200 and rgb[:20, :20, 0].mean() < 50
