"""Faces: real BlazeFace (mediapipe Tasks) on a real face photo moving across frames."""

import av
import numpy as np
import pytest

from live.face_models import FACE_MODELS, FaceModelError, resolve_face_models
from live.faces import FaceTracker, TrackedFace, crop_face, default_detector, iou, primary_track, window_faces
from live.frames import VideoFrame
from live.window import file_window
from tests.media import BACKGROUND, cached_clip, clip_frames


@pytest.fixture(scope="module")
def detector():
    return default_detector()


def track_clip(path, detector, **kw):
    tracker = FaceTracker(detector, **kw)
    with av.open(str(path)) as c:
        frames = [VideoFrame(float(f.time), f) for f in c.decode(video=0)]
    return tracker, tracker.track(frames)


def vanishing_clip(path, vanish_s=5.0, seconds=8.0):
    """A real clip (the astronaut's face moving across a plain background) whose face
    is gone from ``vanish_s`` on: those frames are replaced by the bare background.
    Returns (path, fps, index of the first frame without the face)."""
    g = cached_clip("vanish_src", seconds=seconds, audio=False)
    frames = clip_frames(g["path"])
    cut = int(round(vanish_s * g["fps"]))
    frames[cut:] = np.array(BACKGROUND, np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=g["fps"])
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for x in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(x, format="rgb24")))
        c.mux(s.encode())
    return path, g["fps"], cut


def test_models_resolved_and_verified():
    paths = resolve_face_models()
    for key, (name, _) in FACE_MODELS.items():
        assert paths[key].name == name and paths[key].stat().st_size > 100_000


def test_bad_model_folder_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / FACE_MODELS["short"][0]).write_bytes(b"not a model")
    with pytest.raises(FaceModelError, match="missing|sha256"):
        resolve_face_models(tmp_path)
    monkeypatch.setenv("OMNI_FACE_MODELS", str(tmp_path))
    with pytest.raises(FaceModelError, match="OMNI_FACE_MODELS"):
        resolve_face_models()


def test_face_tracked_in_every_frame_with_one_stable_id(detector):
    g = cached_clip("talk")
    tracker, per_frame = track_clip(g["path"], detector)
    assert len(per_frame) == g["n_frames"]
    ious, ids = [], set()
    for i, faces in enumerate(per_frame):
        assert len(faces) == 1, f"frame {i}: {len(faces)} faces"
        ids.add(faces[0].track)
        ious.append(iou(faces[0].box, np.array(g["face_boxes"][i])))
    assert ids == {1}
    assert min(ious) > 0.5, f"worst IoU {min(ious):.2f}"
    assert np.mean(ious) > 0.7
    # detection ran a few times a second, tracking carried the rest
    assert tracker.detections_run <= g["seconds"] * 6
    assert sum(f[0].detected for f in per_frame) == tracker.detections_run


def test_no_face_clip_gives_no_faces(detector):
    g = cached_clip("noface", face=False, seconds=2.0, audio=False)
    _, per_frame = track_clip(g["path"], detector)
    assert all(len(f) == 0 for f in per_frame)


def test_small_far_face_found_by_full_range(detector):
    g = cached_clip("far", face_scale=150, seconds=1.0, audio=False, moving=False)
    _, per_frame = track_clip(g["path"], detector)
    assert all(len(f) == 1 for f in per_frame)
    assert detector.calls["full"] > 0


def test_large_near_face_found(detector):
    g = cached_clip("near", face_scale=420, seconds=1.0, audio=False, moving=False)
    _, per_frame = track_clip(g["path"], detector)
    assert all(len(f) == 1 for f in per_frame)
    assert iou(per_frame[-1][0].box, np.array(g["face_boxes"][29])) > 0.5


class ScriptedDetector:
    """Returns given boxes per call (None = miss); records calls."""

    def __init__(self, script):
        self.script, self.calls = list(script), 0

    def __call__(self, rgb, face_frac=None):
        from live.detector import Detection

        boxes = self.script[self.calls] if self.calls < len(self.script) else []
        self.calls += 1
        return [Detection(np.array(b, np.float32), 0.9) for b in boxes]


def _frames(times):
    return [VideoFrame(t, np.zeros((480, 640, 3), np.uint8)) for t in times]


def test_unconfirmed_track_keeps_its_id_but_is_not_reported():
    box = [100, 100, 200, 200]
    # found, missed twice (kept internally, not reported), found again: same id
    det = ScriptedDetector([[box], [], [], [box], [], [], [], [], [box]])
    tr = FaceTracker(det, detect_interval_s=0.0, lost_after_s=0.5)
    seen = tr.track(_frames([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6]))
    assert [len(s) for s in seen] == [1, 0, 0, 1, 0, 0, 0, 0, 1]
    assert seen[0][0].track == seen[3][0].track == 1 and seen[3][0].detected
    # missed for longer than lost_after_s: the track was dropped, a new id follows
    assert seen[8][0].track == 2


def test_frames_between_detections_wait_for_the_next_one():
    box = [100, 100, 200, 200]
    det = ScriptedDetector([[box], [box]])
    tr = FaceTracker(det, detect_interval_s=0.2)
    frames = _frames([0.0, 0.05, 0.1, 0.15, 0.2])
    assert tr.push(frames[0]) == [frames[0]]  # a detection frame settles at once
    assert [tr.push(f) for f in frames[1:4]] == [[], [], []]  # held
    assert tr.held_since == 0.05 and frames[1].faces is None
    assert tr.push(frames[4]) == frames[1:]  # the next detection settles them, in order
    assert [len(f.faces) for f in frames] == [1] * 5 and tr.held_since is None
    assert [f.faces[0].detected for f in frames] == [True, False, False, False, True]
    assert det.calls == 2  # confirmed on both sides: no extra detections


def test_face_that_leaves_between_detections_stops_where_it_left():
    box = [100, 100, 200, 200]
    # detections: t=0 finds it, t=0.2 misses; re-checking the held frames finds it at
    # 0.05 and misses at 0.1 (it left there); 0.15 is never checked
    det = ScriptedDetector([[box], [], [box], []])
    tr = FaceTracker(det, detect_interval_s=0.2)
    seen = tr.track(_frames([0.0, 0.05, 0.1, 0.15, 0.2]))
    assert [len(s) for s in seen] == [1, 1, 0, 0, 0]
    assert seen[1][0].detected and det.calls == 4


def test_face_that_arrives_between_detections_is_found_back():
    box = [100, 100, 200, 200]
    # t=0 nothing; t=0.2 finds it; newest held frame first: 0.15 yes, 0.1 yes, 0.05 no
    det = ScriptedDetector([[], [box], [box], [box], []])
    tr = FaceTracker(det, detect_interval_s=0.2)
    seen = tr.track(_frames([0.0, 0.05, 0.1, 0.15, 0.2]))
    assert [len(s) for s in seen] == [0, 0, 1, 1, 1]
    assert {s[0].track for s in seen if s} == {1} and tr.primary == 1


def test_flush_settles_the_held_frames_with_a_detection():
    box = [100, 100, 200, 200]
    det = ScriptedDetector([[box], [box]])
    tr = FaceTracker(det, detect_interval_s=0.2)
    frames = _frames([0.0, 0.05, 0.1])
    for f in frames:
        tr.push(f)
    assert tr.flush() == frames[1:] and det.calls == 2  # the newest held frame is detected
    assert [len(f.faces) for f in frames] == [1, 1, 1] and tr.flush() == []


class _MovingDetector:
    """One face whose box moves ``speed`` px/s to the right in frames whose pixels hold
    their index (``_numbered``, 30 fps); records the call times."""

    def __init__(self, speed: float):
        self.speed, self.times = speed, []

    def __call__(self, rgb, face_frac=None):
        from live.detector import Detection

        t = int(rgb[0, 0, 0]) / 30
        self.times.append(t)
        if self.speed is None:
            return []
        return [Detection(np.array([100 + self.speed * t, 100, 200 + self.speed * t, 200], np.float32), 0.9)]


@pytest.mark.parametrize("speed, steady", [(0.0, True), (10.0, True), (150.0, False), (None, True)])
def test_detection_cadence_stretches_only_for_a_steady_face(speed, steady):
    """0.2 s between detections until a face is tracked by STEADY_HITS detections and
    moves less than STEADY_MOTION of its side per 1/3 s; then 1/3 s. A face of side 100
    moving 150 px/s (0.5 sides per 1/3 s) keeps 0.2 s. No face at all (None) is steady."""
    from live.faces import DETECT_INTERVAL_S, STEADY_HITS, STEADY_INTERVAL_S

    frames = [VideoFrame(i / 30, np.full((480, 640, 3), i, np.uint8)) for i in range(90)]  # 3 s
    det = _MovingDetector(speed)
    tr = FaceTracker(det)
    seen = tr.track(frames)
    gaps = np.diff(det.times)
    assert all(len(s) == (speed is not None) for s in seen)  # coverage is the same either way
    assert np.allclose(gaps[:STEADY_HITS - 1], DETECT_INTERVAL_S, atol=0.02)
    want = STEADY_INTERVAL_S if steady else DETECT_INTERVAL_S
    assert np.allclose(gaps[STEADY_HITS - 1:-1], want, atol=0.02), gaps  # the last: flush()
    with pytest.raises(ValueError, match="steady_interval_s"):
        FaceTracker(det, detect_interval_s=0.3, steady_interval_s=0.2)


def test_ghost_faces_after_a_face_leaves(detector, tmp_path):
    """A real clip whose face vanishes at 5.0 s, the real BlazeFace tracker with the
    live defaults: at most 2 frames after the vanish carry a face (the old tracker
    carried a drifting box into 50 frames after it), and every frame before it does."""
    path, fps, cut = vanishing_clip(tmp_path / "vanish.mp4")
    tracker, per_frame = track_clip(path, detector)
    after = sum(len(f) > 0 for f in per_frame[cut:])
    assert after <= 2, f"{after} frames after the face left carry it"
    assert all(len(f) == 1 for f in per_frame[:cut]), "a frame with the face lost it"
    assert {f[0].track for f in per_frame[:cut]} == {1}
    # the extra detections that find where the face left stay few
    assert tracker.detections_run <= len(per_frame) / (fps * 0.2) + 2 * fps * 0.2


def test_primary_is_largest_and_sticky():
    small, big = [20, 20, 80, 80], [250, 150, 400, 300]
    det = ScriptedDetector([[small, big], [small, big], [[20, 20, 150, 150], big]])
    tr = FaceTracker(det, detect_interval_s=0.0)
    img = np.zeros((480, 640, 3), np.uint8)
    first, = tr.push(VideoFrame(0.0, img))
    big_id = next(f.track for f in first.faces if f.box[0] > 200)
    assert tr.primary == first.primary == big_id
    tr.push(VideoFrame(0.1, img))
    last, = tr.push(VideoFrame(0.2, img))  # the other face grew, but not by enough to take over
    assert tr.primary == last.primary == big_id
    with pytest.raises(ValueError, match="time order"):
        tr.push(VideoFrame(0.1, img))


def test_crop_face_square_padded():
    img = np.full((100, 100, 3), 200, np.uint8)
    crop = crop_face(img, [0, 0, 50, 50])  # margin leaves the image: zero padding
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    assert crop[0, 0].max() == 0 and crop[112, 112].min() == 200
    with pytest.raises(ValueError):
        crop_face(img, [10, 10, 10, 40])


def _tracked(t, faces, primary):
    """A VideoFrame as the tracker leaves it: faces {track: box}, its primary track."""
    f = VideoFrame(t, np.full((100, 100, 3), 50 + 10 * int(t), np.uint8))
    f.faces = [TrackedFace(k, np.array(b, np.float32), 0.9, True) for k, b in faces.items()]
    f.primary = primary
    return f


def test_primary_face_rule_and_tie_breaks():
    a, b = [10, 10, 40, 40], [50, 50, 90, 90]
    # most frames wins, even against the tracker's latest primary
    frames = [_tracked(0, {1: a, 2: b}, 2), _tracked(1, {1: a}, 1), _tracked(2, {1: a, 2: b}, 2)]
    assert primary_track(frames) == 1
    # tie on frames: the track the tracker last named primary (latest frame first)
    frames = [_tracked(0, {1: a, 2: b}, 1), _tracked(1, {1: a, 2: b}, 2)]
    assert primary_track(frames) == 2
    # tie and no primary among them: the lowest (oldest) track id
    frames = [_tracked(0, {5: a, 3: b}, None), _tracked(1, {5: a, 3: b}, None)]
    assert primary_track(frames) == 3
    assert primary_track([_tracked(0, {}, None), None]) is None
    # crops: only where the window's face is, zeros and NaN boxes elsewhere
    frames = [_tracked(0, {1: a}, 1), _tracked(1, {2: b}, 2), _tracked(2, {1: a}, 1)]
    faces, present, boxes, track = window_faces(frames, size=32)
    assert track == 1 and present.tolist() == [True, False, True]
    assert faces.shape == (3, 32, 32, 3) and faces[1].max() == 0 and faces[0].max() > 0
    np.testing.assert_array_equal(faces[0], crop_face(frames[0].rgb(), a, size=32))
    assert np.isnan(boxes[1]).all() and boxes[2].tolist() == a


def test_file_window_tracks_like_live(detector):
    g = cached_clip("talk")
    got = file_window(g["path"], tracker=FaceTracker(detector))
    assert got.faces.shape == (8, 224, 224, 3) and got.face_present.all() and got.face_track is not None
    # a face crop is mostly face, not the plain green background
    bg = np.array([70, 110, 90])
    assert all(np.abs(c.reshape(-1, 3) - bg).sum(1).mean() > 40 for c in got.faces)
    # the whole clip by default: slice centres of [first frame, last frame + 1/fps]
    fps, n = g["fps"], g["n_frames"]
    want = np.ceil((np.arange(8) + 0.5) * n / 8 - 0.5).astype(int)  # nearest frame, ties earlier
    np.testing.assert_allclose(got.frame_times, want / fps, atol=1e-6)
    np.testing.assert_array_equal(got.frames, clip_frames(g["path"])[want])
    none = file_window(g["path"], tracker=None)
    assert not none.face_present.any() and none.faces.max() == 0 and none.face_track is None
