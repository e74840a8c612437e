"""One rule per concept from capture to model: a real clip (a face photo moving across
the picture + espeak-ng speech) gives the same 8 frames, the same face crops and the
same audio through the live path (Engine + FileSource, real BlazeFace tracker) and the
training path (model.data.preprocess.preprocess_sample) for the same span.

On the code before this rule existed, training took np.linspace frames with both ends
(frame 0 and the last frame of the span) and cropped faces with its own tracker
settings on the 8 frames alone, so frames and crops differed from the live window's.
"""
from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest

from live.engine import Engine, EngineConfig
from live.faces import FaceTracker, default_detector
from live.contract.media import AUDIO_RATE, N_FRAMES
from live.sources import FileSource, video_times
from model.data.manifest import make_sample
from model.data.preprocess import preprocess_sample
from model.net.processor import Clip
from tests.media import cached_clip, clip_frames

CLIP = dict(seconds=6.0, size=(320, 240), face_scale=120)  # under 384 px: stored as decoded


class Collector:
    def __init__(self):
        self.windows, self._lock = [], threading.Lock()

    def __call__(self, window):
        with self._lock:
            self.windows.append(window)
        return {}


@pytest.fixture(scope="module")
def live_windows():
    g = cached_clip("one_rule", **CLIP)
    collect = Collector()
    cfg = EngineConfig(every_window=True)  # 4 s windows every 1 s, none dropped
    Engine(FileSource(g["path"]), collect, cfg, tracker=FaceTracker(default_detector())).run()
    windows = sorted(collect.windows, key=lambda w: w.index)
    assert len(windows) == 3  # ends at 4, 5, 6 s
    return g, windows


def _training(g, span):
    sample = make_sample("one_rule", "emotion_cls", "Which emotion?", "happy.", video=g["path"])
    return preprocess_sample(sample, "/", span=span)


def test_live_and_training_paths_see_the_same_frames_crops_and_audio(live_windows):
    g, windows = live_windows
    all_frames = clip_frames(g["path"])
    times = video_times(g["path"])
    audio = None
    for w in windows:
        got = _training(g, (w.start, w.end))
        # the same 8 frames: pixels, and times that are the slice centres' nearest frames
        assert got.frames.shape == w.frames.shape == (N_FRAMES, 240, 320, 3)
        np.testing.assert_array_equal(got.frames, w.frames)
        centres = w.start + (np.arange(N_FRAMES) + 0.5) * (w.end - w.start) / N_FRAMES
        nearest = [int(np.abs(times - c).argmin()) for c in centres]
        np.testing.assert_allclose(w.frame_times, times[nearest], atol=1e-9)
        np.testing.assert_array_equal(w.frames, all_frames[nearest])
        # neither end frame of the span unless it is a slice centre's nearest (the old skew)
        assert w.frame_times[0] > w.start + 0.1 and w.frame_times[-1] < w.end - 0.1
        # the same face in every frame, the same crops
        assert w.face_present.all()
        np.testing.assert_array_equal(got.face_present, w.face_present)
        np.testing.assert_array_equal(got.faces, w.faces)
        # the same 16 kHz samples (the file clock starts at 0 for this clip)
        audio = got.audio
        a0 = int(round(w.start * AUDIO_RATE))
        np.testing.assert_array_equal(w.audio, audio[a0 : a0 + w.audio.size])
    assert np.abs(audio).max() > 0.1  # the clip speaks


def test_window_and_cached_sample_become_the_same_clip(live_windows):
    g, windows = live_windows
    w = windows[0]
    served = w  # the window is the clip the analyser serves (a live.contract.media.Clip)
    got = _training(g, (w.start, w.end))
    trained = replace(got, audio=got.audio[: w.audio.size])  # training keeps the whole track
    for name in ("frames", "faces", "face_present", "audio"):
        np.testing.assert_array_equal(getattr(served, name), getattr(trained, name))
    assert (served.has_video, served.has_audio) == (trained.has_video, trained.has_audio) == (True, True)


def test_a_missing_modality_has_one_form():
    """`live.contract.media.no_frames` / `no_faces` / `no_audio` are the one zero-fill: the
    processor's `Clip` fills a missing modality with exactly them (issue 19)."""
    from live.contract.media import no_audio, no_faces, no_frames

    sound = Clip(audio=np.ones(10, np.float32))
    faces, present = no_faces()
    assert (sound.has_video, sound.has_audio) == (False, True)
    for got, want in ((sound.frames, no_frames()), (sound.faces, faces), (sound.face_present, present)):
        assert got.dtype == want.dtype and got.shape == want.shape and not got.any()
    picture = Clip(frames=np.zeros((3, 4, 4, 3), np.uint8))
    assert picture.faces.shape == no_faces(3)[0].shape and picture.audio.shape == no_audio().shape == (0,)
    assert not picture.has_audio and not picture.face_present.any()
