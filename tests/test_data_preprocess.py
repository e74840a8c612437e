"""Decode-once cache: real clips made with av + espeak-ng, a fake face cropper."""
import numpy as np
import pytest

from model.data.manifest import make_sample
from model.data.preprocess import (
    AUDIO_RATE, DecodeError, cache_path, decode_audio, load_cached, preprocess_manifest,
    sample_indices,
)
from tests.media import clip_frames, make_clip, write_wav

FPS, SECONDS, SIZE = 10, 2.0, (160, 120)


class FakeCropper:
    """Records what it was given; 'finds' a face in even frames (crop = frame index)."""

    def __init__(self):
        self.calls = []

    def __call__(self, frames, times):
        self.calls.append((frames.copy(), np.asarray(times)))
        n = len(frames)
        crops = np.zeros((n, 224, 224, 3), np.uint8)
        for i in range(n):
            crops[i] = i
        return crops, np.arange(n) % 2 == 0


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
    crop = FakeCropper()
    summary = preprocess_manifest([_cls("dfew/1", "talk.mp4")], tmp_path / "c", base_dir=d,
                                  face_cropper=crop, progress=False)
    assert summary.done == ["dfew/1"] and not summary.failed
    z = np.load(cache_path(tmp_path / "c", "dfew/1"))
    # 8 uniform frames, first and last included; 160x120 is under the size cap: exact
    all_frames = clip_frames(d / "talk.mp4")
    idx = sample_indices(len(all_frames), 8)
    assert idx[0] == 0 and idx[-1] == len(all_frames) - 1
    np.testing.assert_array_equal(z["frames"], all_frames[idx])
    # the cropper saw the same full frames and their timestamps (s)
    frames_seen, times = crop.calls[0]
    np.testing.assert_array_equal(frames_seen, all_frames[idx])
    np.testing.assert_allclose(times, idx / FPS, atol=1e-6)
    assert z["faces"].shape == (8, 224, 224, 3) and z["faces"][3].max() == 3
    np.testing.assert_array_equal(z["face_present"], np.arange(8) % 2 == 0)
    # 16 kHz mono float32, the clip's length (AAC adds up to ~2 frames of padding)
    a = z["audio"]
    assert a.dtype == np.float32 and abs(a.size - SECONDS * AUDIO_RATE) <= 2 * 1024
    speech = slice(int(0.35 * AUDIO_RATE), int(0.6 * AUDIO_RATE))
    assert np.abs(a[speech]).max() > 0.1 and np.abs(a[-1000:]).max() < 0.02
    back = load_cached(tmp_path / "c", "dfew/1")
    np.testing.assert_array_equal(back["face_mask"], z["face_present"])
    assert back["audio"].shape == a.shape


def test_large_frames_are_scaled_for_storage(tmp_path):
    make_clip(tmp_path / "big.mp4", seconds=0.5, fps=10, size=(800, 600), face=False, audio=False)
    preprocess_manifest([_cls("b", "big.mp4")], tmp_path / "c", base_dir=tmp_path,
                        face_cropper=FakeCropper(), progress=False)
    got = load_cached(tmp_path / "c", "b")
    assert got["frames"].shape == (8, 288, 384, 3)  # long side 384, aspect 4:3 kept
    assert got["audio"] is None  # the clip has no audio track


def test_corrupt_video_reported_not_substituted_and_cache_reused(clip, tmp_path):
    d, _ = clip
    (tmp_path / "bad.mp4").write_bytes(b"garbage" * 100)
    samples = [_cls("ok", str(d / "talk.mp4")), _cls("bad", str(tmp_path / "bad.mp4")),
               _cls("gone", str(tmp_path / "gone.mp4"))]
    crop = FakeCropper()
    s = preprocess_manifest(samples, tmp_path / "c", face_cropper=crop, progress=False)
    assert s.done == ["ok"] and sorted(s.failed) == ["bad", "gone"]
    assert "bad.mp4" in s.failed["bad"] and "no such file" in s.failed["gone"]
    assert not cache_path(tmp_path / "c", "bad").exists()
    with pytest.raises(FileNotFoundError, match="'bad'"):
        load_cached(tmp_path / "c", "bad")
    # second run: cached sample not decoded again; overwrite re-decodes
    s2 = preprocess_manifest(samples[:1], tmp_path / "c", face_cropper=crop, progress=False)
    assert s2.cached == ["ok"] and s2.done == [] and len(crop.calls) == 1
    s3 = preprocess_manifest(samples[:1], tmp_path / "c", face_cropper=crop, overwrite=True,
                             progress=False)
    assert s3.done == ["ok"] and len(crop.calls) == 2


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
                            face_cropper=FakeCropper(), progress=False)
    assert s.done == ["a", "v"]
    a = load_cached(tmp_path / "c", "a")
    assert a["frames"] is None and a["faces"] is None and a["face_mask"] is None
    np.testing.assert_allclose(a["audio"], tone, atol=2e-4)  # 16-bit wav quantisation
    v = load_cached(tmp_path / "c", "v")
    np.testing.assert_allclose(v["audio"], tone, atol=2e-4)
    assert v["frames"].shape[0] == 8


def test_bad_cropper_output_and_resampling(clip, tmp_path):
    d, _ = clip
    with pytest.raises(ValueError, match="face cropper returned"):
        preprocess_manifest([_cls("x", str(d / "talk.mp4"))], tmp_path / "c",
                            face_cropper=lambda f, t: (np.zeros((8, 10, 10, 3), np.uint8),
                                                       np.zeros(8, bool)), progress=False)
    # 48 kHz stereo-free wav → 16 kHz, same duration
    write_wav(np.zeros(48_000, np.float32), 48_000, tmp_path / "hi.wav")
    assert abs(decode_audio(tmp_path / "hi.wav").size - AUDIO_RATE) <= 64
    with pytest.raises(DecodeError):
        decode_audio(tmp_path / "nothing.wav")


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
    assert got["face_mask"].all()
    assert got["faces"].shape == (8, 224, 224, 3) and got["faces"].mean() > 50
