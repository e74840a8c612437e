"""Decode-once cache: real clips made with av + espeak-ng, a fake face detector inside
live's real tracker."""
import numpy as np
import pytest

from live.detector import Detection
from live.faces import FaceTracker, crop_face
from live.contract.media import AUDIO_RATE
from live.sources import SourceError, decode_audio
from model.data.manifest import make_sample
from model.data.preprocess import (
    DecodeError, cache_path, load_cached, no_face_tracker, preprocess_manifest, preprocess_sample,
)
from tests.media import clip_frames, make_clip, write_wav

FPS, SECONDS, SIZE = 10, 2.0, (160, 120)
BOX = np.array([40.0, 30.0, 100.0, 90.0], np.float32)  # what the fake detector "finds"
# 20 frames at 0.0, 0.1, ... 1.9 s; the whole clip spans [0, 2.0]: slice centres 0.125,
# 0.375, ... 1.875 s → nearest frames (ties to the earlier one), worked out by hand.
# The old rule (np.linspace(0, 19, 8)) took frames 0, 3, 5, 8, 11, 14, 16, 19.
WHOLE_CLIP = [1, 4, 6, 9, 11, 14, 16, 19]


class FakeTrackers:
    """A face-tracker factory: live's FaceTracker on a detector that always finds BOX;
    counts the clips it was asked for."""

    def __init__(self):
        self.made = 0

    def __call__(self):
        self.made += 1
        return FaceTracker(lambda rgb, face_frac=None: [Detection(BOX.copy(), 0.9)])


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    truth = make_clip(d / "talk.mp4", seconds=SECONDS, fps=FPS, size=SIZE, face_scale=100,
                      speech=[(0.3, "hello")])
    return d, truth


def _cls(sid, video, audio=None):
    return make_sample(sid, "emotion_cls", "Which emotion? a, b.", "a.", video=video, audio=audio)


def test_frames_audio_faces_cached(clip, tmp_path):
    d, truth = clip
    summary = preprocess_manifest([_cls("dfew/1", "talk.mp4")], tmp_path / "c", base_dir=d,
                                  face_tracker=FakeTrackers(), progress=False)
    assert summary.done == ["dfew/1"] and not summary.failed
    z = np.load(cache_path(tmp_path / "c", "dfew/1"))
    # live's sampling rule over the whole clip; 160x120 is under the size cap: exact
    all_frames = clip_frames(d / "talk.mp4")
    np.testing.assert_array_equal(z["frames"], all_frames[WHOLE_CLIP])
    # crops of the tracked box from the full frames, in every frame
    assert z["faces"].shape == (8, 224, 224, 3) and z["face_present"].all()
    for crop, i in zip(z["faces"], WHOLE_CLIP):
        np.testing.assert_array_equal(crop, crop_face(all_frames[i], BOX))
    # 16 kHz mono float32, the clip's length (AAC adds up to ~2 frames of padding)
    a = z["audio"]
    assert a.dtype == np.float32 and abs(a.size - SECONDS * AUDIO_RATE) <= 2 * 1024
    speech = slice(int(0.35 * AUDIO_RATE), int(0.6 * AUDIO_RATE))
    assert np.abs(a[speech]).max() > 0.1 and np.abs(a[-1000:]).max() < 0.02
    back = load_cached(tmp_path / "c", "dfew/1")
    assert back.has_video is True and back.has_audio is True
    np.testing.assert_array_equal(back.face_present, z["face_present"])
    assert back.audio.shape == a.shape


def test_span_picks_the_frames_a_live_window_would(clip):
    d, _ = clip
    got = preprocess_sample(_cls("s", "talk.mp4"), d, no_face_tracker, span=(0.52, 1.32))
    # slice centres 0.57, 0.67, ... 1.27 s → the frames at 0.6, 0.7, ... 1.3 s
    np.testing.assert_array_equal(got.frames, clip_frames(d / "talk.mp4")[6:14])
    assert not got.face_present.any() and got.faces.max() == 0


def test_large_frames_are_scaled_for_storage(tmp_path):
    make_clip(tmp_path / "big.mp4", seconds=0.5, fps=10, size=(800, 600), face=False, audio=False)
    preprocess_manifest([_cls("b", "big.mp4")], tmp_path / "c", base_dir=tmp_path,
                        face_tracker=no_face_tracker, progress=False)
    got = load_cached(tmp_path / "c", "b")
    assert got.frames.shape == (8, 288, 384, 3)  # long side 384, aspect 4:3 kept
    assert got.has_audio is False and got.audio.shape == (0,)  # no audio track


def test_storage_size_is_the_live_ingest_rule():
    """Training stores frames by `live.contract.media.ingest_size` (issue 19): a picture within
    the long side keeps its odd sides as live keeps them (it was rounded to even here)."""
    from live.contract.media import FRAME_MAX_SIDE, ingest_size
    from model.data.preprocess import _scaled

    odd = np.random.default_rng(0).integers(0, 255, (2, 241, 321, 3), dtype=np.uint8)
    assert _scaled(odd, FRAME_MAX_SIDE) is odd  # kept as decoded, not resized to 320×240
    for h, w in ((600, 800), (361, 641), (1080, 1920)):
        got = _scaled(np.zeros((1, h, w, 3), np.uint8), FRAME_MAX_SIDE)
        assert got.shape[1:3] == ingest_size(w, h, FRAME_MAX_SIDE)[::-1]


def test_corrupt_video_reported_not_substituted_and_cache_reused(clip, tmp_path):
    d, _ = clip
    (tmp_path / "bad.mp4").write_bytes(b"garbage" * 100)
    samples = [_cls("ok", str(d / "talk.mp4")), _cls("bad", str(tmp_path / "bad.mp4")),
               _cls("gone", str(tmp_path / "gone.mp4"))]
    trackers = FakeTrackers()
    s = preprocess_manifest(samples, tmp_path / "c", face_tracker=trackers, progress=False)
    assert s.done == ["ok"] and sorted(s.failed) == ["bad", "gone"]
    assert "bad.mp4" in s.failed["bad"] and "no such file" in s.failed["gone"]
    assert not cache_path(tmp_path / "c", "bad").exists()
    with pytest.raises(FileNotFoundError, match="'bad'"):
        load_cached(tmp_path / "c", "bad")
    # second run: cached sample not decoded again; overwrite re-decodes
    made = trackers.made
    s2 = preprocess_manifest(samples[:1], tmp_path / "c", face_tracker=trackers, progress=False)
    assert s2.cached == ["ok"] and s2.done == [] and trackers.made == made
    s3 = preprocess_manifest(samples[:1], tmp_path / "c", face_tracker=trackers, overwrite=True,
                             progress=False)
    assert s3.done == ["ok"] and trackers.made == made + 1


def test_audio_only_and_separate_audio(clip, tmp_path):
    d, _ = clip
    t = np.arange(AUDIO_RATE // 2) / AUDIO_RATE
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    write_wav(tone, AUDIO_RATE, tmp_path / "tone.wav")
    samples = [
        make_sample("a", "asr", "Write it down.", "Hi.", video=None, audio="tone.wav"),
        _cls("v", str(d / "talk.mp4"), audio="tone.wav"),  # audio file overrides the track
    ]
    s = preprocess_manifest(samples, tmp_path / "c", base_dir=tmp_path,
                            face_tracker=FakeTrackers(), progress=False)
    assert s.done == ["a", "v"]
    a = load_cached(tmp_path / "c", "a")
    # absent video: the one form (flags + zeros of the documented shape), no None
    assert a.has_video is False and a.frames.shape == (0, 0, 0, 3)
    assert a.faces.shape == (8, 224, 224, 3) and a.faces.max() == 0 and not a.face_present.any()
    np.testing.assert_allclose(a.audio, tone, atol=2e-4)  # 16-bit wav quantisation
    v = load_cached(tmp_path / "c", "v")
    np.testing.assert_allclose(v.audio, tone, atol=2e-4)
    assert v.frames.shape[0] == 8


def test_audio_decoding_resamples_and_fails_loudly(tmp_path):
    # 48 kHz → 16 kHz, same duration, through live's one audio decoder
    write_wav(np.zeros(48_000, np.float32), 48_000, tmp_path / "hi.wav")
    assert abs(decode_audio(tmp_path / "hi.wav").size - AUDIO_RATE) <= 64
    assert decode_audio(tmp_path / "hi.wav", max_s=0.25).size == AUDIO_RATE // 4
    with pytest.raises(SourceError):
        decode_audio(tmp_path / "nothing.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF" + b"\x00" * 40)
    with pytest.raises(DecodeError):
        preprocess_sample(make_sample("j", "asr", "Write it down.", "Hi.", video=None, audio="junk.wav"),
                          tmp_path, no_face_tracker)


def test_cache_names_do_not_collide(tmp_path):
    a, b = cache_path(tmp_path, "a/b"), cache_path(tmp_path, "a_b")
    assert a != b and a.parent == b.parent == tmp_path
    assert cache_path(tmp_path, "dfew_1").name == "dfew_1.npz"


def test_default_cropper_is_live_face_tracker(tmp_path):
    # the real BlazeFace detector + tracker from live/ on a clip with a face
    make_clip(tmp_path / "face.mp4", seconds=2.0, fps=10, size=(320, 240), face_scale=160,
              speech=None)
    s = preprocess_manifest([_cls("f", "face.mp4")], tmp_path / "c", base_dir=tmp_path,
                            progress=False)
    assert s.done == ["f"]
    got = load_cached(tmp_path / "c", "f")
    assert got.face_present.all()
    assert got.faces.shape == (8, 224, 224, 3) and got.faces.mean() > 50
