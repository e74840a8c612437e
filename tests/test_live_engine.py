"""Engine, windows and the analyser worker on real media."""
import threading

import numpy as np
import pytest

from live.contract.result import make_result
from live.worker import AnalyserWorker, FakeAnalyser, NullAnalyser
from live.engine import Engine, EngineConfig, WindowEvent
from live.detector import no_faces
from live.faces import FaceTracker, TrackedFace, default_detector
from live.contract.media import MAX_WINDOW_S, sample_targets
from live.sources import FileSource, PushSource, decode_audio, video_times
from live.window import Gate, Window
from tests.media import cached_clip


def run_engine(path, analyser=None, **cfg):
    events, frames, segs = [], [], []
    eng = Engine(FileSource(path), analyser or NullAnalyser(), EngineConfig(**cfg),
                 tracker=FaceTracker(default_detector()),
                 on_frame=lambda f, faces: frames.append((f.t, faces)),
                 on_segment=segs.append, on_window=events.append)
    stats = eng.run()
    return eng, stats, events, frames, segs


@pytest.fixture(scope="module")
def talk_run():
    g = cached_clip("talk")
    return g, run_engine(g["path"])


def test_windows_timing_exact(talk_run):
    g, (eng, stats, events, frames, segs) = talk_run
    wins = sorted((e.window for e in events), key=lambda w: w.index)
    assert [(w.start, w.end) for w in wins] == [(0.0, 4.0), (1.0, 5.0), (2.0, 6.0)]
    times = np.array([t for t, _ in frames])
    for w in wins:
        expect = sample_targets(w.start, w.end, 8)
        nearest = times[np.abs(times[:, None] - expect[None]).argmin(0)]
        np.testing.assert_allclose(w.frame_times, nearest)
        assert np.all(np.abs(w.frame_times - expect) <= 0.5 / g["fps"] + 1e-9)
        assert w.frames.shape == (8, 480, 640, 3) and w.frames.dtype == np.uint8
        assert w.audio.shape == (64_000,) and w.audio.dtype == np.float32
        assert w.faces.shape == (8, 224, 224, 3) and w.face_present.all()
        assert w.face_track == 1


def test_window_audio_matches_source_and_speech(talk_run):
    g, (eng, stats, events, frames, segs) = talk_run
    w = next(e.window for e in events if e.window.index == 1)
    truth = g["audio"][16_000:80_000]
    # AAC is lossy: compare envelopes, aligned within 5 ms
    assert np.corrcoef(np.abs(w.audio), np.abs(truth))[0, 1] > 0.9
    (t0, t1), = g["speech"]
    assert len(segs) == 1 and abs(segs[0].start - t0) < 0.15 and abs(segs[0].end - t1) < 0.15
    assert w.speech_ratio == pytest.approx((min(t1, 5.0) - t0) / 4.0, abs=0.06)
    assert stats["frames"] == g["n_frames"] == len(frames)
    assert stats["windows"] == 3 and stats["analyser_errors"] == 0
    assert stats["media_seconds"] == pytest.approx(6.0, abs=0.05)


def test_no_audio_file_works_and_gates():
    g = cached_clip("silent_video", audio=False, seconds=5.0)
    eng, stats, events, frames, segs = run_engine(g["path"], gate="speech")
    assert not eng.source.has_audio and segs == []
    assert stats["windows"] == 2 and all(not e.analysed and e.reason == "gated" for e in events)
    assert all(not e.window.has_audio and not e.window.audio.any() for e in events)


def test_gate_face_policy():
    g = cached_clip("noface", face=False, seconds=2.0, audio=False)
    eng, stats, events, frames, segs = run_engine(g["path"], gate="face", window_s=1.0, hop_s=0.5)
    assert [(e.window.start, e.window.end) for e in events] == [(0.0, 1.0), (0.5, 1.5), (1.0, 1.5 + 0.5)]
    assert all(e.reason == "gated" and e.window.face_track is None for e in events)
    with pytest.raises(ValueError, match="gate policy"):
        Gate("sometimes")


def test_short_clip_gets_one_tail_window():
    g = cached_clip("short", seconds=2.0, speech=((0.3, "hi there"),))
    eng, stats, events, frames, segs = run_engine(g["path"])
    assert len(events) == 1 and events[0].window.start == 0.0
    assert events[0].window.end == pytest.approx(2.0, abs=0.05)


class Blocking:
    """Analyser that waits until released; records what it saw."""

    def __init__(self):
        self.go, self.seen, self.entered = threading.Event(), [], threading.Event()

    def __call__(self, w):
        self.entered.set()
        self.go.wait(5)
        self.seen.append(w.index)
        return {"i": w.index}


def fake_window(i, created=0.0):
    z = np.zeros(8)
    return Window(index=i, start=i, end=i + 4, frames=None, frame_times=z, faces=np.zeros((8, 1, 1, 3), np.uint8),
                  face_present=z.astype(bool), face_boxes=np.zeros((8, 4)), face_track=None,
                  audio=np.zeros(10, np.float32), speech=[], speech_ratio=0.0, created=created)


def test_newest_window_wins():
    a = Blocking()
    done = []
    w = AnalyserWorker(a, lambda win, res, err, info: done.append((win.index, res))).start()
    w.submit(fake_window(0))
    assert a.entered.wait(2)
    dropped = [w.submit(fake_window(i)) for i in range(1, 5)]
    assert [d.index if d else None for d in dropped] == [None, 1, 2, 3]
    a.go.set()
    assert w.wait_idle(5)
    assert a.seen == [0, 4] and w.dropped == 3 and w.analysed == 2
    assert done == [(0, {"i": 0}), (4, {"i": 4})]
    w.stop()


def test_analyser_crash_survived(caplog):
    fake = FakeAnalyser(delay_s=0.0, fail_on={1})
    got = []
    w = AnalyserWorker(fake, lambda win, res, err, info: got.append((win.index, err))).start()
    for i in range(3):
        w.submit(fake_window(i))
        assert w.wait_idle(5)
    w.stop()
    assert w.errors == 1 and w.analysed == 2
    assert [i for i, e in got if e is not None] == [1]
    assert "analyser failed on window 1" in caplog.text


def test_engine_counts_crash_and_drops_with_slow_analyser():
    g = cached_clip("talk")
    fake = FakeAnalyser(delay_s=0.3, fail_on={0})
    eng, stats, events, frames, segs = run_engine(g["path"], fake, hop_s=0.25)
    assert stats["windows"] == 9
    assert stats["analyser_errors"] == 1
    assert stats["dropped_windows"] == sum(e.reason == "dropped" for e in events) > 0
    analysed = [e for e in events if e.analysed]
    assert len(analysed) + stats["dropped_windows"] + 1 == stats["windows"]
    assert len(events) == stats["windows"]  # every window is reported exactly once


def test_every_window_mode_drops_nothing():
    g = cached_clip("talk")
    eng, stats, events, frames, segs = run_engine(g["path"], FakeAnalyser(0.05), hop_s=0.5,
                                                  every_window=True)
    assert stats["dropped_windows"] == 0 and all(e.analysed for e in events)
    assert stats["windows"] == 5


def test_push_source_48k_browser_audio_and_frames():
    g = cached_clip("talk", )
    from tests.media import clip_frames, AUDIO_RATE
    from live.resample import Resampler

    frames = clip_frames(g["path"])[::6]  # 5 fps, as a browser stream delivers
    audio48 = Resampler(48_000).from_array(g["audio"], AUDIO_RATE)
    pcm = (np.clip(audio48, -1, 1) * 32767).astype(np.int16)
    src = PushSource()
    events, segs = [], []
    eng = Engine(src, NullAnalyser(), EngineConfig(window_s=2.0, hop_s=1.0),
                 tracker=FaceTracker(default_detector()), on_window=events.append,
                 on_segment=segs.append)
    runner = threading.Thread(target=eng.run)
    runner.start()
    assert src.ready.wait(60)
    t0 = eng.clock.now()
    step = 9600  # 0.2 s chunks at 48 kHz
    # stamped as captured (a browser chunk's capture time), not on arrival: a loaded
    # machine delays the pushes, which must not change what the engine sees
    for k, i in enumerate(range(0, len(pcm), step)):
        src.push_audio(pcm[i : i + step], 48_000, t=t0 + k * 0.2)
        src.push_video(frames[min(k, len(frames) - 1)], t=t0 + k * 0.2)
    src.end()
    runner.join(60)
    stats = eng.stats()
    assert not runner.is_alive()
    assert stats["frames"] == 30 and stats["windows"] >= 3
    (t_start, t_end), = g["speech"]
    assert len(segs) == 1
    assert abs((segs[0].end - segs[0].start) - (t_end - t_start)) < 0.2
    assert any(e.window.face_present.any() for e in events)
    assert eng.audio.total == pytest.approx(len(g["audio"]), abs=800)


def test_worker_times_the_queue_without_touching_the_window():
    got = []
    w = AnalyserWorker(NullAnalyser(), lambda win, res, err, info: got.append(info)).start()
    win = fake_window(0, created=123.0)
    w.submit(win)
    assert w.wait_idle(5)
    w.stop()
    assert win.created == 123.0  # "perf_counter() at assembly", never rewritten at submit
    assert 0 <= got[0]["queue_s"] < 5 and got[0]["run_s"] >= 0


def test_every_stand_in_returns_the_one_result_shape():
    shape = set(make_result())
    win = fake_window(0)
    for analyser in (NullAnalyser(), FakeAnalyser(delay_s=0.0)):
        result = analyser(win)
        assert set(result) == shape and isinstance(result["labels"], list), type(analyser)
    assert FakeAnalyser(delay_s=0.0)(win)["label"] == "neutral"


def test_window_record_one_format_for_every_outcome():
    g = cached_clip("talk")

    class Pending:
        def __call__(self, w):
            return make_result(pending="model still loading") if w.index == 1 else FakeAnalyser(0.0)(w)

    eng, stats, events, frames, segs = run_engine(g["path"], Pending(), every_window=True)
    gated = WindowEvent(events[0].window, False, None, "gated")
    recs = {e.window.index: e.to_json(run=3) for e in events}
    assert len({frozenset(r) for r in [*recs.values(), gated.to_json(run=3)]}) == 1  # same fields
    assert recs[0]["analysed"] and recs[0]["reason"] is None and recs[0]["label"] == "neutral"
    assert recs[0]["explanation"].startswith("fake result") and recs[0]["run"] == 3
    # a file read as fast as possible: analyser and queue seconds, no wall-clock latency
    assert recs[0]["analyse_s"] >= 0 and recs[0]["queue_s"] >= 0 and recs[0]["latency_s"] is None
    assert not recs[1]["analysed"] and recs[1]["reason"] == "pending"
    assert recs[1]["pending"] == "model still loading"
    g_rec = gated.to_json()
    assert g_rec["reason"] == "gated" and g_rec["label"] is None and g_rec["labels"] == []
    assert g_rec["analyse_s"] is None and len(g_rec["frame_times"]) == 8


def test_analyser_error_is_a_record_with_error():
    g = cached_clip("talk")
    eng, stats, events, frames, segs = run_engine(g["path"], FakeAnalyser(0.0, fail_on={2}),
                                                  every_window=True)
    rec = next(e for e in events if e.window.index == 2).to_json()
    assert not rec["analysed"] and rec["reason"] == "error" and rec["label"] is None
    assert rec["error"] == "RuntimeError: fake analyser failure on window 2"


@pytest.mark.parametrize("kw,needle", [
    (dict(hop_s=float("nan")), "hop_s must be a finite number of seconds > 0, got nan"),
    (dict(window_s=float("inf")), "window_s must be a finite number of seconds > 0, got inf"),
    (dict(window_s=-4.0), "window_s .* got -4.0"),
    (dict(hop_s=0), "hop_s .* got 0"),
    (dict(window_s=MAX_WINDOW_S + 0.5), f"window_s must be at most {MAX_WINDOW_S:g} s, got 10.5"),
])
def test_engine_config_rejects_bad_window_and_hop(kw, needle):
    with pytest.raises(ValueError, match=needle):
        EngineConfig(**kw)


def test_longest_window_at_60_fps_gets_its_own_frames_and_audio(caplog):
    """A MAX_WINDOW_S window over a real 60 fps clip: the buffers are sized from the
    window, so every window holds the frames nearest its slice centres (no repeated
    oldest frame, as a 300-frame buffer gave: 5 s at 60 fps) and the file's audio."""
    g = cached_clip("long60", seconds=12.0, fps=60, size=(320, 240), face_scale=120,
                    speech=((0.3, "hello there, how are you today"),))
    events = []
    eng = Engine(FileSource(g["path"]), NullAnalyser(),
                 EngineConfig(window_s=MAX_WINDOW_S, hop_s=1.0, every_window=True),
                 tracker=FaceTracker(no_faces), on_window=events.append)
    eng.run()
    assert eng.frames.capacity_s >= MAX_WINDOW_S and eng.audio.capacity >= MAX_WINDOW_S * 16000
    wins = sorted((e.window for e in events), key=lambda w: w.index)
    assert [(w.start, w.end) for w in wins] == [(0.0, 10.0), (1.0, 11.0), (2.0, 12.0)]
    times, audio = video_times(g["path"]), decode_audio(g["path"])
    for w in wins:
        nearest = times[np.abs(times[:, None] - sample_targets(w.start, w.end, 8)[None]).argmin(0)]
        np.testing.assert_allclose(w.frame_times, nearest)
        assert len(set(w.frame_times.tolist())) == 8
        a0 = int(round(w.start * 16000))
        np.testing.assert_array_equal(w.audio, audio[a0 : a0 + w.audio.size])
    assert np.abs(wins[0].audio[:16000]).max() > 0.05  # the speech at 0.3 s is there
    assert "frame buffer" not in caplog.text


def test_window_pictures_and_crops_are_made_on_first_read_only():
    """Building a window copies no pictures and makes no crops: ``Window.frames`` and
    ``Window.faces`` are computed when (and only when) a consumer reads them, once,
    equal to the eager rule (``window_faces``); a pickled window carries the arrays."""
    import pickle

    import av

    from live.buffers import FrameBuffer
    from live.faces import window_faces
    from live.frames import VideoFrame
    from live.window import WindowAssembler

    buf = FrameBuffer(200)
    for i in range(40):  # 4 s at 10 fps, decoder-format frames (RGB on demand)
        rgb = np.full((48, 64, 3), i, np.uint8)
        f = VideoFrame(i / 10, av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p"))
        f.faces = [TrackedFace(7, np.array([10, 8, 30 + i % 3, 30], np.float32), 0.9, True)] if i % 4 else []
        f.primary = 7 if i % 4 else None
        buf.append(f)
    asm = WindowAssembler(hop_s=1.0, window_s=4.0, n_frames=8)
    asm.anchor(0.0)
    w = asm.build(4.0, buf, None, None, has_video=True, has_audio=False)
    picked = buf.sample(0.0, 4.0, 8)
    assert all(f._rgb is None and not f.crops for f in picked)  # nothing converted, copied or cropped
    assert w.face_track == 7 and w.face_present.any() and not w.face_present.all()
    imgs = w.frames
    assert imgs.shape == (8, 48, 64, 3) and imgs.dtype == np.uint8
    np.testing.assert_array_equal(imgs, np.stack([f.rgb() for f in picked]))
    assert w.frames is imgs  # stacked once
    faces, present, boxes, track = window_faces(picked, 224)
    np.testing.assert_array_equal(w.faces, faces)
    np.testing.assert_array_equal(w.face_present, present)
    np.testing.assert_array_equal(w.face_boxes, boxes)
    assert w.faces is w.faces and faces[present].any() and not faces[~present].any()
    back = pickle.loads(pickle.dumps(w))
    assert isinstance(back.__dict__["_frames"], np.ndarray) and isinstance(back.__dict__["_faces"], np.ndarray)
    np.testing.assert_array_equal(back.frames, imgs)
    np.testing.assert_array_equal(back.faces, faces)
