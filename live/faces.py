"""Face tracking and face crops.

``FaceTracker.push(frame)`` tracks a stream of frames: the detector every
``detect_interval_s`` (``steady_interval_s`` while the faces are steady), boxes carried
in between, matched by IoU, smoothed, a primary face named. A face is reported in a
frame only while a detection confirms it: frames between two detections are held and
settled with the next one (``push`` returns the frames it settles). The cadence, the
holding rule and its latency: docs/live.md.

``window_faces(frames)`` is THE primary-face rule: which track is a window's face
(live windows and training preprocessing both call it on tracked frames), and
``crop_face(rgb, box)`` makes the 224×224 square crops that the model consumes.
The tracker settings live here once, as ``FaceTracker``'s defaults; the live engine
and offline preprocessing (``live.window.file_window``) both track every frame with them.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from live.detector import DETECT_MAX_SIDE, Detection, FaceDetector
from live.frames import VideoFrame
from live.contract.media import CROP_SIZE

DETECT_INTERVAL_S = 0.2  # s between detector runs; tracking carries boxes in between
# ...stretched to this while every reported face is steady (STEADY_MOTION), or while
# there is none: detection was half the front end's CPU (issue 12, docs/benchmarks.md),
# and a steady face is carried well for 1/3 s. A moving, new or lost face keeps 0.2 s.
STEADY_INTERVAL_S = 1 / 3
# a face is steady when its box corners move less than this fraction of its side in
# STEADY_INTERVAL_S (constant-velocity prediction error grows with speed)
STEADY_MOTION = 0.15
STEADY_HITS = 3  # detections in a row with the same faces before the cadence may stretch
LOST_AFTER_S = 1.0  # s without a matching detection before a track is dropped
IOU_MATCH = 0.2  # min IoU(predicted track box, detection) to continue a track
# ...or a centre distance below this many face sides (far-apart frames, fast moves)
MAX_JUMP = 0.75
SMOOTH = 0.6  # weight of a new detection vs. the prediction (1 = no smoothing)
VEL_SMOOTH = 0.5  # weight of the newest velocity estimate
MAX_SPEED = 3.0  # |velocity| cap, in box sizes per second: damp wild extrapolation
PRIMARY_SWITCH = 1.3  # another face must score this many times higher to become primary
CROP_MARGIN = 0.25  # extra context on each side, as a fraction of the face box side


@dataclass
class TrackedFace:
    """A face held by the tracker in one frame.

    ``box``: (4,) float [x0, y0, x1, y1] pixels of the full frame; ``score``: score of
    the last matched detection; ``detected``: True if a detection in this frame gave
    the box (False when it is carried between two confirming detections)."""

    track: int
    box: np.ndarray
    score: float
    detected: bool

    def to_json(self) -> dict:
        return {
            "track": self.track,
            "box": [round(float(v), 1) for v in self.box],
            "score": round(self.score, 3),
        }


@dataclass
class _Track:
    id: int
    box: np.ndarray  # (4,) at time t
    t: float
    score: float
    last_seen: float
    vel: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))  # px/s
    hits: int = 1

    def predict(self, t: float) -> np.ndarray:
        return self.box + self.vel * (t - self.t)


@dataclass
class _Held:
    frame: VideoFrame
    boxes: dict[int, np.ndarray]  # track id -> carried box in this frame


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class FaceTracker:
    """Stable face tracks over a stream of frames.

    ``detector``: a ``FaceDetector`` (default: the process's shared ``default_detector()``;
    ``live.detector.no_faces`` turns face detection off).
    ``detect_interval_s``: 0 detects on every frame (nothing is held).
    ``steady_interval_s``: the interval while the last STEADY_HITS detections reported
    the same faces, each moving less than ``STEADY_MOTION`` of its side per interval (or
    no face at all); equal to ``detect_interval_s`` for a fixed cadence.
    ``push(frame)`` → the frames settled so far; ``flush()`` settles the rest (the
    end of a stream); ``track(frames)`` does both for a whole sequence.
    Thread-safety: one tracker per stream; calls are serialised by a lock.
    """

    def __init__(
        self,
        detector: FaceDetector | None = None,
        detect_interval_s: float = DETECT_INTERVAL_S,
        lost_after_s: float = LOST_AFTER_S,
        steady_interval_s: float = STEADY_INTERVAL_S,
        iou_match: float = IOU_MATCH,
        smooth: float = SMOOTH,
        max_jump: float = MAX_JUMP,
    ) -> None:
        if detect_interval_s < 0 or lost_after_s <= 0:
            raise ValueError(
                f"need detect_interval_s >= 0 and lost_after_s > 0, got "
                f"{detect_interval_s}, {lost_after_s}"
            )
        if not steady_interval_s >= detect_interval_s:
            raise ValueError(f"steady_interval_s ({steady_interval_s}) must be >= detect_interval_s "
                             f"({detect_interval_s})")
        if not 0.0 < smooth <= 1.0:
            raise ValueError(f"smooth must be in (0, 1], got {smooth}")
        self._detector = detector
        self.detect_interval_s = detect_interval_s
        self.steady_interval_s = steady_interval_s if detect_interval_s > 0 else 0.0
        self.lost_after_s = lost_after_s
        self.iou_match = iou_match
        self.smooth = smooth
        self.max_jump = max_jump
        self._lock = threading.Lock()
        self.detections_run = 0
        self.reset()

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = default_detector()  # one per process: it is costly to build
        return self._detector

    def reset(self) -> None:
        self._tracks: list[_Track] = []
        self._held: list[_Held] = []  # frames since the last detection, not yet settled
        self._confirmed: set[int] = set()  # tracks the last detection matched
        self._next_id = 1
        self._last_detect = -np.inf
        self._interval = self.detect_interval_s  # until the next detection
        self._same = -1  # detections in a row that reported the same faces (or none) as the one before
        self._last_t = -np.inf
        self.primary: int | None = None

    # -- helpers -------------------------------------------------------------------
    def _detect(self, frame: VideoFrame) -> list[Detection]:
        small, scale = frame.rgb_scaled(DETECT_MAX_SIDE)
        frac = None
        if self._tracks:
            widths = [t.box[2] - t.box[0] for t in self._tracks]
            frac = max(widths) / frame.width
        dets = self.detector(small, face_frac=frac)
        self.detections_run += 1
        for d in dets:
            d.box = np.asarray(d.box, np.float32) * scale
        return dets

    def _update(self, t: float, dets: list[Detection]) -> set[int]:
        """Greedy matching of detections to predicted tracks; returns matched ids."""
        preds = [tr.predict(t) for tr in self._tracks]
        pairs = sorted(
            ((self._similarity(p, d.box), i, j) for i, p in enumerate(preds) for j, d in enumerate(dets)),
            reverse=True,
        )
        used_t, used_d, matched = set(), set(), set()
        for score, i, j in pairs:
            if score <= 0.0 or i in used_t or j in used_d:
                continue
            used_t.add(i)
            used_d.add(j)
            tr, d = self._tracks[i], dets[j]
            dt = t - tr.t
            new_box = self.smooth * d.box + (1.0 - self.smooth) * preds[i]
            if dt > 0:
                v = (new_box - tr.box) / dt
                side = max(1.0, float(new_box[2] - new_box[0]))
                v = np.clip(v, -MAX_SPEED * side, MAX_SPEED * side)
                tr.vel = (VEL_SMOOTH * v + (1.0 - VEL_SMOOTH) * tr.vel).astype(np.float32)
            tr.box, tr.t, tr.score, tr.last_seen = new_box.astype(np.float32), t, d.score, t
            tr.hits += 1
            matched.add(tr.id)
        for j, d in enumerate(dets):
            if j not in used_d:
                self._tracks.append(
                    _Track(self._next_id, d.box.astype(np.float32), t, d.score, t)
                )
                matched.add(self._next_id)
                self._next_id += 1
        return matched

    def _similarity(self, p: np.ndarray, b: np.ndarray) -> float:
        """> 0 when detection box ``b`` continues the track whose box is ``p``: IoU of
        at least ``iou_match`` (scored above any distance-only match), or a centre
        jump of less than ``max_jump`` face sides."""
        o = iou(p, b)
        if o >= self.iou_match:
            return 1.0 + o
        side = max(1.0, float(p[2] - p[0]), float(p[3] - p[1]))
        jump = np.hypot((p[0] + p[2] - b[0] - b[2]) / 2, (p[1] + p[3] - b[1] - b[3]) / 2)
        return 1.0 - jump / side / self.max_jump

    def _confirm(self, frame: VideoFrame, box: np.ndarray, cache: dict) -> Detection | None:
        """The detection in ``frame`` that continues a face at ``box``, or None
        (detections are run once per frame and kept in ``cache``)."""
        key = id(frame)
        if key not in cache:
            cache[key] = self._detect(frame)
        best = max(cache[key], key=lambda d: self._similarity(box, d.box), default=None)
        return best if best is not None and self._similarity(box, best.box) > 0.0 else None

    def _carried(self, frame: VideoFrame) -> dict[int, np.ndarray]:
        """Each live track's predicted box in ``frame``, kept on the picture (a face
        leaving the frame stops at its edge); boxes under 2 px are left out."""
        out = {}
        for tr in self._tracks:
            b = np.clip(tr.predict(frame.t), [0, 0, 0, 0], [frame.width, frame.height] * 2)
            if b[2] - b[0] >= 2 and b[3] - b[1] >= 2:
                out[tr.id] = b.astype(np.float32)
        return out

    def _settle(self, frame: VideoFrame) -> list[VideoFrame]:
        """Run a detection on ``frame`` and settle it and every held frame before it.

        A track is reported in a held frame only where a detection confirms it:
        confirmed by the detections on both sides, it is reported in every held frame
        (with its carried box); confirmed only before, held frames are checked oldest
        first with the detector until it is missing (the face left); confirmed only
        after, newest first (the face arrived). The detection frame reports the
        tracks its detections matched."""
        t = frame.t
        self._last_detect = t
        after = self._update(t, self._detect(frame))
        self._tracks = [tr for tr in self._tracks if t - tr.last_seen <= self.lost_after_s]
        now = self._carried(frame)
        scores = {tr.id: tr.score for tr in self._tracks}
        held, before = self._held, self._confirmed
        shown: list[dict[int, tuple[np.ndarray, bool]]] = [{} for _ in held]
        cache: dict = {}
        for tid in before | after:
            if tid in before and tid in after:
                for i, h in enumerate(held):
                    if tid in h.boxes:
                        shown[i][tid] = (h.boxes[tid], False)
                continue
            if tid in before:  # lost at this detection: where did it leave?
                order, ref = range(len(held)), None
            elif tid in now:  # found at this detection: since when is it there?
                order, ref = range(len(held) - 1, -1, -1), now[tid]
            else:
                continue
            for i in order:
                box = held[i].boxes.get(tid) if ref is None else ref
                d = None if box is None else self._confirm(held[i].frame, box, cache)
                if d is None:
                    break
                shown[i][tid] = (np.asarray(d.box, np.float32), True)
                if ref is not None:
                    ref = d.box
        out = []
        for h, faces in zip(held, shown):
            out.append(self._report(h.frame, {k: faces[k] for k in sorted(faces)}, scores))
        out.append(self._report(frame, {k: (now[k], True) for k in sorted(after) if k in now}, scores))
        confirmed = {k for k in after if k in now}
        self._interval = self._next_interval(confirmed, before)
        self._held, self._confirmed = [], confirmed
        return out

    def _next_interval(self, confirmed: set[int], before: set[int]) -> float:
        """``steady_interval_s`` when the last STEADY_HITS detections reported the same
        faces and each is steady, or none at all; else ``detect_interval_s``. (A face
        that appears while the cadence is long is still found back to its first
        frame by the held-frame re-checks: only its report waits up to 1/3 s.)"""
        self._same = self._same + 1 if confirmed == before else 0
        if self._same < STEADY_HITS - 1:
            return self.detect_interval_s
        if not confirmed:
            return self.steady_interval_s
        for tr in self._tracks:
            if tr.id in confirmed:
                side = max(1.0, float(tr.box[2] - tr.box[0]), float(tr.box[3] - tr.box[1]))
                # (the same confirmed ids at STEADY_HITS detections: each matched them all,
                # so its velocity comes from STEADY_HITS boxes)
                if float(np.abs(tr.vel).max()) * self.steady_interval_s > STEADY_MOTION * side:
                    return self.detect_interval_s
        return self.steady_interval_s

    def _report(self, frame: VideoFrame, faces: dict, scores: dict) -> VideoFrame:
        frame.faces = [TrackedFace(k, b, scores.get(k, 0.0), det) for k, (b, det) in faces.items()]
        self._pick_primary(frame.width, frame.height, {k: b for k, (b, _) in faces.items()})
        frame.primary = self.primary
        return frame

    def _pick_primary(self, w: int, h: int, boxes: dict[int, np.ndarray]) -> None:
        """Largest and most central face; the current one keeps the role unless
        another clearly beats it, so the primary does not flicker between faces."""

        def score(b: np.ndarray) -> float:
            area = max(0.0, (b[2] - b[0]) * (b[3] - b[1])) / (w * h)
            cx, cy = (b[0] + b[2]) / 2 / w - 0.5, (b[1] + b[3]) / 2 / h - 0.5
            return area * (1.0 - min(1.0, np.hypot(cx, cy)))

        if not boxes:
            self.primary = None
            return
        scores = {tid: score(b) for tid, b in boxes.items()}
        best = max(scores, key=scores.get)
        cur = self.primary
        if cur in scores and scores[best] <= PRIMARY_SWITCH * scores[cur]:
            return
        self.primary = best

    # -- public --------------------------------------------------------------------
    def push(self, frame: VideoFrame) -> list[VideoFrame]:
        """Track ``frame``; returns the frames settled by it, oldest first, each with
        ``frame.faces`` (the ``TrackedFace``s a detection confirms there) and
        ``frame.primary`` set. A frame between two detections is held until the next
        detection (at most ``steady_interval_s`` later) and settled with it."""
        with self._lock:
            t = frame.t
            if t < self._last_t:
                raise ValueError(f"frames must come in time order: {t} after {self._last_t}")
            self._last_t = t
            if t - self._last_detect >= self._interval - 1e-9:
                return self._settle(frame)
            self._tracks = [tr for tr in self._tracks if t - tr.last_seen <= self.lost_after_s]
            self._held.append(_Held(frame, self._carried(frame)))
            return []

    def flush(self) -> list[VideoFrame]:
        """Settle the held frames now (the end of a stream, or a stalled one): the
        newest held frame gets a detection of its own."""
        with self._lock:
            if not self._held:
                return []
            return self._settle(self._held.pop().frame)

    @property
    def held_since(self) -> float | None:
        """Time of the oldest frame waiting for the next detection (None: none)."""
        with self._lock:
            return self._held[0].frame.t if self._held else None

    def track(self, frames) -> list[list[TrackedFace]]:
        """Track a whole sequence of ``VideoFrame``s (``push`` each, then ``flush``);
        returns each frame's faces, in order."""
        frames = list(frames)
        for f in frames:
            self.push(f)
        self.flush()
        return [f.faces for f in frames]


def crop_face(
    rgb: np.ndarray, box, size: int = CROP_SIZE, margin: float = CROP_MARGIN
) -> np.ndarray:
    """Square crop around ``box`` ([x0, y0, x1, y1] px) with ``margin`` on each side,
    zero-padded where it leaves the image, resized to (size, size, 3) uint8 RGB."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"empty face box {box}")
    side = max(x1 - x0, y1 - y0) * (1.0 + 2.0 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    s = max(1, int(round(side)))
    ax, ay = int(round(cx - s / 2)), int(round(cy - s / 2))
    h, w = rgb.shape[:2]
    canvas = np.zeros((s, s, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(0, ax), max(0, ay), min(w, ax + s), min(h, ay + s)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - ay : sy1 - ay, sx0 - ax : sx1 - ax] = rgb[sy0:sy1, sx0:sx1]
    if s == size:
        return canvas
    return np.asarray(Image.fromarray(canvas).resize((size, size), Image.BILINEAR))


_default_detector = None
_default_lock = threading.Lock()


def default_detector() -> FaceDetector:
    """One shared ``MediaPipeFaceDetector`` per process (built on first use)."""
    global _default_detector
    with _default_lock:
        if _default_detector is None:
            from live.detector import MediaPipeFaceDetector

            _default_detector = MediaPipeFaceDetector()
        return _default_detector


def primary_track(frames) -> int | None:
    """THE primary-face rule: which track is the face of a window's sampled frames.

    ``frames``: tracked ``VideoFrame``s (``.faces`` and ``.primary`` set by
    ``FaceTracker.push``; None entries are skipped). The track present in the most
    frames wins; a tie goes to the track the tracker last named primary in these frames
    (latest frame first), then to the lowest track id (the oldest track). None when no
    frame holds a face.
    """
    votes: dict[int, int] = {}
    for f in frames:
        for tf in (f.faces or ()) if f is not None else ():
            votes[tf.track] = votes.get(tf.track, 0) + 1
    if not votes:
        return None
    last_primary = next((f.primary for f in reversed(frames) if f is not None and f.primary is not None), None)
    return max(sorted(votes), key=lambda k: (votes[k], k == last_primary))


def window_face_boxes(frames):
    """Where the window's face (``primary_track``) is in each of its T tracked frames.

    Returns ``(present, boxes, track)``: present (T,) bool; boxes (T, 4) float32
    [x0, y0, x1, y1] px, NaN where absent; track the primary track id or None.
    """
    n = len(frames)
    present = np.zeros(n, bool)
    boxes = np.full((n, 4), np.nan, np.float32)
    track = primary_track(frames)
    if track is None:
        return present, boxes, None
    for i, f in enumerate(frames):
        box = next((tf.box for tf in f.faces or () if tf.track == track), None) if f is not None else None
        if box is not None:
            present[i], boxes[i] = True, box
    return present, boxes, track


def face_crops(frames, present, boxes, track, size: int = CROP_SIZE) -> np.ndarray:
    """(T, size, size, 3) uint8 crops of ``track`` at ``boxes`` where ``present``
    (``window_face_boxes``), zeros elsewhere. A crop is made once per frame and track
    (``frame.crops``) and reused by every overlapping window."""
    faces = np.zeros((len(frames), size, size, 3), np.uint8)
    for i in np.flatnonzero(present):
        f = frames[i]
        crop = f.crops.get((track, size))
        if crop is None:
            crop = f.crops[(track, size)] = crop_face(f.rgb(), boxes[i], size=size)
        faces[i] = crop
    return faces


def window_faces(frames, size: int = CROP_SIZE):
    """Crops of the window's face (``primary_track``) in each of its T tracked frames:
    ``window_face_boxes`` then ``face_crops``.

    Returns ``(faces, present, boxes, track)``: faces (T, size, size, 3) uint8, zeros
    where absent; present (T,) bool; boxes (T, 4) float32 [x0, y0, x1, y1] px, NaN where
    absent; track the primary track id or None.
    """
    present, boxes, track = window_face_boxes(frames)
    return face_crops(frames, present, boxes, track, size), present, boxes, track
