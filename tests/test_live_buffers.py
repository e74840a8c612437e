"""Ring buffers: bounded, time-indexed, safe with several producer threads."""
import threading

import numpy as np
import pytest

from live.buffers import AudioBuffer, FrameBuffer, frame_capacity
from live.engine import Engine
from live.faces import iou
from live.frames import MAX_FRAME_BYTES, VideoFrame
from live.contract.media import INGEST_MAX_SIDE, N_FRAMES, WINDOW_S, ingest_size, nearest_indices
from live.sources import FileSource, PushSource
from tests.media import cached_clip


def frame(t):
    return VideoFrame(t, np.zeros((4, 4, 3), np.uint8))


def test_frame_buffer_bounded_and_indexed():
    buf = FrameBuffer(capacity=10)
    for i in range(1000):
        buf.append(frame(i / 30))
    assert len(buf) == 10 and buf.dropped == 990 and buf.appended == 1000
    got, nxt = buf.since(0)
    assert len(got) == 10 and nxt == 1000 and got[0].t == pytest.approx(990 / 30)
    assert [f.t for f in buf.between(995 / 30, 997 / 30)] == pytest.approx([995 / 30, 996 / 30, 997 / 30])
    times, items = buf._snapshot()  # what `sample` picks from: the held frames only
    near = [items[k] for k in nearest_indices(times, [0.0, 996.4 / 30, 1e9])]
    assert [f.t for f in near] == pytest.approx([990 / 30, 996 / 30, 999 / 30])
    with pytest.raises(ValueError, match="older"):
        buf.append(frame(0.0))


def test_audio_buffer_bounded_wraps_and_times():
    buf = AudioBuffer(capacity_s=1.0)
    x = np.arange(40_000, dtype=np.float32)
    for i in range(0, len(x), 333):  # odd chunk sizes cross the wrap many times
        buf.append(5.0 + i / 16000, x[i : i + 333])
    assert buf._buf.nbytes == 16000 * 4  # memory is the capacity, nothing more
    assert buf.total == 40_000 and buf.end_time() == pytest.approx(5.0 + 2.5)
    np.testing.assert_array_equal(buf.samples(30_000, 40_000), x[30_000:])
    old = buf.samples(0, 100)  # fell out: zeros, not garbage
    assert not old.any()
    w = buf.between(7.0, 7.25)
    np.testing.assert_array_equal(w, x[32_000:36_000])
    future = buf.samples(39_990, 40_010)
    np.testing.assert_array_equal(future[:10], x[-10:])
    assert not future[10:].any()


def test_audio_gap_filled_with_silence():
    buf = AudioBuffer(capacity_s=5.0)
    buf.append(0.0, np.ones(16000, np.float32))
    buf.append(1.5, np.ones(16000, np.float32))  # 0.5 s of audio lost
    assert buf.gap_samples == 8000 and buf.end_time() == pytest.approx(2.5)
    seg = buf.between(1.0, 1.5)
    assert not seg.any()
    buf.append(2.49, np.ones(160, np.float32))  # early stamp: sample clock wins
    assert buf.end_time() == pytest.approx(2.51)


def test_multithreaded_producers_safe():
    """Four producers and a reader race on both buffers. Threads only record what they
    saw (an assert inside a thread would not fail the test); the checks run here."""
    fb, ab = FrameBuffer(capacity=50), AudioBuffer(capacity_s=2.0)
    lock, clock = threading.Lock(), [0.0]
    n_threads, per_thread, reads = 4, 500, 300
    errors: list[BaseException] = []  # any exception raised in any thread
    snapshots: list[tuple[list[float], int, int]] = []  # reader: (frame times, audio asked, got)

    def guarded(fn):
        def run(*args):
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001  (reported in the test's thread)
                errors.append(e)
        return run

    def produce(k):
        for i in range(per_thread):
            with lock:  # time stamps must be ordered; the appends themselves race
                clock[0] += 0.001
                t = clock[0]
                fb.append(frame(t))
            ab.append(t, np.full(37, k, np.float32))

    def read():
        for _ in range(reads):
            got, _ = fb.since(0)
            total = ab.total
            snapshots.append(([f.t for f in got], min(100, total), len(ab.samples(max(0, total - 100), total))))

    threads = [threading.Thread(target=guarded(produce), args=(k,)) for k in range(n_threads)]
    threads += [threading.Thread(target=guarded(read))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(snapshots) == reads
    for times, asked, got in snapshots:
        assert times == sorted(times) and len(times) <= 50
        assert got == asked
    assert fb.appended == n_threads * per_thread and len(fb) == 50
    assert ab.total >= n_threads * per_thread * 37  # plus any gap filling
    vals = ab.samples(ab.total - 32_000, ab.total)
    assert set(np.unique(vals)) <= {0.0, 1.0, 2.0, 3.0}


def test_video_frame_validation_and_lazy_rgb():
    with pytest.raises(ValueError, match="uint8"):
        VideoFrame(0.0, np.zeros((4, 4, 3), np.float32))
    import av

    src = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 100, np.uint8), format="rgb24").reformat(format="yuv420p")
    f = VideoFrame(1.0, src)
    assert (f.width, f.height) == (64, 48)
    assert f.rgb().shape == (48, 64, 3) and abs(int(f.rgb()[10, 10, 0]) - 100) < 4
    small, scale = f.rgb_scaled(32)
    assert small.shape == (24, 32, 3) and scale == 2.0


# -- frames at the size the consumers need (issue 12) --------------------------------

UHD = (3840, 2160)  # px: a 4K source
STORED = (640, 360)  # its ingest_size (long side INGEST_MAX_SIDE)


def test_ingest_size_rule():
    assert ingest_size(*UHD) == STORED == ingest_size(1920, 1080) == ingest_size(1280, 720)
    assert ingest_size(640, 480) == (640, 480) and ingest_size(320, 240) == (320, 240)
    assert ingest_size(1080, 1920) == (360, 640)  # portrait: the long side is capped
    w, h = ingest_size(1001, 3001)
    assert h == INGEST_MAX_SIDE - INGEST_MAX_SIDE % 2 and w % 2 == 0 and w == 214


def test_4k_pushed_frames_bounded_in_bytes():
    """4K RGB arrays pushed into a PushSource are stored at 640×360: the buffer holds
    what a 640×360 source would, never more than capacity * MAX_FRAME_BYTES."""
    buf = FrameBuffer(*frame_capacity(WINDOW_S))

    class Sink:
        def video(self, f):
            buf.append(f)

        def audio(self, chunk):
            pass

    src = PushSource(has_audio=False)
    src.open()
    src._sink = Sink()  # what run() sets: the engine's sink
    img = np.zeros((UHD[1], UHD[0], 3), np.uint8)
    img[:, UHD[0] // 2 :] = 200  # right half bright: the downscale keeps the picture
    for k in range(12):
        src.push_video(img, t=k / 30)
    frames = buf.since(0)[0]
    assert len(frames) == 12 and all((f.width, f.height) == STORED and f.scale == 6.0 for f in frames)
    rgb = frames[0].rgb()
    assert rgb.shape == (360, 640, 3) and rgb[:, :300].max() == 0 and rgb[:, 340:].min() == 200
    assert buf.nbytes() == 12 * 640 * 360 * 3 <= buf.max_bytes
    assert buf.max_bytes == buf.capacity * MAX_FRAME_BYTES < buf.capacity * UHD[0] * UHD[1]


def test_4k_file_bounded_in_bytes_and_boxes_in_stored_pixels():
    """A 3840×2160 clip through the engine: every frame is decoded then stored at
    640×360 in YUV (not 12 MB of 4K planes), the frame buffer stays under its byte
    bound, windows carry 640×360 frames, and face boxes are in stored pixels (times
    ``frame.scale`` they are the source's boxes)."""
    g = cached_clip("uhd", seconds=1.0, fps=10, size=UHD, face_scale=800, speech=None)
    seen, windows = [], []
    eng = Engine(FileSource(g["path"]), on_frame=lambda f, faces: seen.append(f),
                 on_window=windows.append)
    eng.run()
    assert len(seen) == g["n_frames"] == 10
    assert all((f.width, f.height) == STORED for f in seen)
    held = eng.frames.nbytes()
    assert 0 < held <= eng.frames.max_bytes
    assert held <= len(eng.frames) * 640 * 360 * 3  # at most RGB of the stored size
    assert held < len(eng.frames) * UHD[0] * UHD[1]  # far below 4K's 4:2:0 planes
    ious = [iou(f.faces[0].box * f.scale, np.array(g["face_boxes"][i]))
            for i, f in enumerate(seen) if f.faces]
    assert len(ious) >= 5 and min(ious) > 0.5  # the face crosses the picture in 1 s
    assert all(0 <= f.faces[0].box[0] and f.faces[0].box[2] <= 640 for f in seen if f.faces)
    w = windows[0].window
    assert w.frames.shape == (N_FRAMES, 360, 640, 3)
    boxes = w.face_boxes[w.face_present]
    assert len(boxes) and boxes[:, 2].max() <= 640 and boxes[:, 3].max() <= 360
