"""The five SRE stages of paper §3 / Fig. 2, for one clip.

1. scene: frames at ``SCENE_FPS`` (at most ``max_frames``) → the VLM: scene, people, actions;
2. face: the primary face tracklet (``live``'s detector and tracker, the live loop's
   code through ``live.window.file_window``) densely sampled → its crops → the VLM:
   facial movements (brows, eyes, mouth, head) and expressions;
3. audio: local ASR (transcript + language) and, optionally, an audio model's caption
   of tone and prosody;
4. consistency: one LLM call with all cues → explanation, open-vocabulary labels,
   intensity; an inconsistent clip is rejected;
5. self-review: one LLM call with the gold label and the explanation → score 0–10;
   under the threshold → rejected.

``curate_clip`` runs them and returns an ``Outcome`` (kept / rejected / failed) with the
records the run writes. Any problem with one clip (missing or unreadable video, no
audio track, no face, an endpoint error or a malformed answer) is a ``failed`` outcome,
never an exception.
"""
from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from live.contract.cli import one_line
from live.contract.media import AUDIO_RATE, CROP_SIZE
from live.sources import SourceError, decode_audio, video_times
from live.window import file_window
from model.net import templates as T
from model.data.manifest import TASK_EMOTION_REASON, make_sample
from model.data.preprocess import default_face_tracker

from .asr import ASR_MAX_S, Transcriber
from .endpoint import (AnswerError, Endpoint, EndpointError, answer_int, audio_part, image_part, schema_format,
                       text_part)

SCENE_FPS = 1.0  # frames/s sent for the global description (paper: 1 fps)
DEFAULT_MAX_FRAMES = 16  # at most this many scene frames per clip
DEFAULT_FACE_CROPS = 16  # face crops densely sampled along the primary tracklet
SCENE_MAX_SIDE = 448  # px, long side of a scene frame sent to the VLM
DEFAULT_THRESHOLD = 5  # self-review scores below this are rejected (paper §3.1)
SCORE_MIN, SCORE_MAX = 0, 10
# answer budgets (tokens) per call
SCENE_TOKENS, FACE_TOKENS, AUDIO_TOKENS, CONSISTENCY_TOKENS, REVIEW_TOKENS = 300, 300, 200, 600, 50

SCENE_PROMPT = (
    "These are frames sampled at 1 frame per second from one video clip, in time order. "
    "Describe the scene (place, lighting, objects), the people in it (how many, where they "
    "are, what they wear) and what they do, including gestures and body posture. Be "
    "factual: describe only what is visible. At most 120 words."
)
FACE_PROMPT = (
    "These are crops of the same person's face, sampled densely in time order from one "
    "video clip. Describe the facial movements: eyebrows (raised, furrowed), eyes (wide, "
    "narrowed, tearful, gaze), mouth (smile, frown, open, lips pressed) and head (nods, "
    "tilts, turns), how they change over time, and the facial expression they form. Be "
    "factual. At most 120 words."
)
AGE_GENDER_PROMPT = " Also give the person's apparent age range and apparent gender."
AUDIO_PROMPT = (
    "Describe the speaker's tone of voice and prosody in this audio: pitch, loudness, "
    "speed, pauses, voice quality (trembling, shouting, whispering, laughing, sobbing) "
    "and the emotion the voice conveys. At most 60 words."
)
CONSISTENCY_PROMPT = (
    "You are an expert in emotion analysis. Below are cues extracted from one video clip by "
    "different tools: a description of the scene, a description of the main person's face, "
    "the speech transcript and a description of the voice. Some cues may be wrong. Check "
    "them against each other, discard cues that contradict the others, and from the "
    "remaining cues explain the main person's emotional state, citing the visual, facial and "
    "acoustic cues and the speech content that support it. If the cues do not support one "
    "coherent emotional reading, the clip is inconsistent.\n\n{cues}\n\n"
    "Answer with only a JSON object of the form {{\"explanation\": <str, the multimodal "
    "explanation, 2-5 sentences>, \"consistent\": <true|false>, \"reason\": <str, why the cues "
    "agree or which ones contradict>, \"labels\": [<open-vocabulary emotion words, 1-5, e.g. "
    "\"worried\", \"tense\">], \"intensity\": <float from 0.0 (none) to 1.0 (extreme)>}}."
)
REVIEW_PROMPT = (
    "You are an expert in emotion analysis. A video clip's ground-truth emotion label is "
    "\"{label}\". An annotator wrote this explanation of the emotion in the clip:\n"
    "{explanation}\nOpen-vocabulary labels: {labels}.\n"
    "On a scale from 0 (contradicts the ground truth) to 10 (fully agrees with it and is "
    "well supported), how well do the explanation and labels agree with the ground-truth "
    "label? Answer with only a JSON object of the form {{\"score\": <integer 0-10>}}."
)


class ClipError(Exception):
    """One clip cannot be curated; ``stage`` names where (recorded in failed.jsonl)."""

    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage = stage


@dataclass
class Settings:
    """What a run does per clip (the CLI's options)."""

    max_frames: int = DEFAULT_MAX_FRAMES
    face_crops: int = DEFAULT_FACE_CROPS
    threshold: int = DEFAULT_THRESHOLD
    age_gender: bool = False
    scene_fps: float = SCENE_FPS


@dataclass
class Models:
    """The run's model servers and local models (``alm``/``asr`` may be None)."""

    vlm: Endpoint
    llm: Endpoint
    asr: Transcriber | None = None
    alm: Endpoint | None = None
    face_tracker: Any = None  # () -> live.faces.FaceTracker; None: live's BlazeFace tracker
    local_lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Outcome:
    """kind: "kept" | "rejected" | "failed"; clues: the clues.jsonl record; record: the
    sre.jsonl / rejected.jsonl / failed.jsonl record."""

    kind: str
    clues: dict
    record: dict


def source_of(sample: dict, default: str = "default") -> str:
    """The dataset a sample comes from: its ``source`` field, else its id's prefix
    before "/" (builders write ``dfew/00017``), else ``default``."""
    if isinstance(sample.get("source"), str) and sample["source"]:
        return sample["source"]
    sid = str(sample["id"])
    return sid.split("/", 1)[0] if "/" in sid else default


def n_scene_frames(duration_s: float, settings: Settings) -> int:
    """Scene frames for a clip: ``scene_fps`` per second, at least 1, at most max_frames."""
    return int(min(settings.max_frames, max(1, round(duration_s * settings.scene_fps))))


def clip_duration(path: Path) -> float:
    """Seconds of a file's video (first to one period after the last frame). Raises SourceError."""
    times = video_times(path)
    if times.size == 0:
        raise SourceError(f"{path}: video stream has no frames")
    period = float(np.median(np.diff(times))) if times.size > 1 else 0.0
    return float(times[-1] - times[0]) + period


def _shrink(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """(H, W, 3) uint8 → long side at most ``max_side`` px."""
    from PIL import Image

    h, w = rgb.shape[:2]
    s = max_side / max(h, w)
    if s >= 1:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR))


# ------------------------------------------------------------------ answer schemas
def parse_text(answer: str) -> str:
    text = " ".join(answer.split())
    if not text:
        raise ValueError("empty answer")
    return text


def parse_consistency(obj: dict) -> dict:
    """Check the consistency answer's schema; returns a clean copy. Raises ValueError."""
    if not isinstance(obj.get("consistent"), bool):
        raise ValueError('"consistent" must be true or false')
    reason = obj.get("reason", "")
    if not isinstance(reason, str):
        raise ValueError('"reason" must be a string')
    labels = obj.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ValueError('"labels" must be a list of strings')
    clean: list[str] = []
    for lab in labels:
        lab = " ".join(lab.split()).lower().strip(" .")
        if "," in lab:
            raise ValueError(f'label "{lab}" contains a comma; give one emotion word per label')
        if lab and lab not in clean:
            clean.append(lab)
    intensity = obj.get("intensity")
    if isinstance(intensity, bool) or not isinstance(intensity, (int, float)) or not 0 <= intensity <= 1:
        raise ValueError(f'"intensity" must be a number from 0.0 to 1.0, got {intensity!r}')
    explanation = obj.get("explanation")
    if not isinstance(explanation, str):
        raise ValueError('"explanation" must be a string')
    explanation = " ".join(explanation.split())
    if obj["consistent"] and (not explanation or not clean):
        raise ValueError('a consistent clip needs a non-empty "explanation" and at least one label')
    return {"consistent": obj["consistent"], "reason": reason.strip(), "labels": clean,
            "intensity": float(intensity), "explanation": explanation or None}


# The answers' JSON schemas, sent as `response_format` (servers that take it keep to
# them; `parse_consistency` / `parse_review` still check every answer).
CONSISTENCY_FORMAT = schema_format("consistency", {
    "type": "object", "additionalProperties": False,
    "required": ["consistent", "reason", "labels", "intensity", "explanation"],
    "properties": {"consistent": {"type": "boolean"}, "reason": {"type": "string"},
                   "labels": {"type": "array", "items": {"type": "string"}},
                   "intensity": {"type": "number", "minimum": 0, "maximum": 1},
                   "explanation": {"type": "string"}}})
REVIEW_FORMAT = schema_format("review", {
    "type": "object", "additionalProperties": False, "required": ["score"],
    "properties": {"score": {"type": "integer", "minimum": SCORE_MIN, "maximum": SCORE_MAX}}})


def parse_review(obj: dict) -> int:
    return answer_int(obj, "score", SCORE_MIN, SCORE_MAX, name='"score"')


# ------------------------------------------------------------------ prompts/messages
def scene_messages(frames: np.ndarray) -> list[dict]:
    """frames (T, H, W, 3) uint8 → the scene request."""
    return [{"role": "user", "content": [text_part(SCENE_PROMPT), *(image_part(f) for f in frames)]}]


def face_messages(crops: np.ndarray, age_gender: bool = False) -> list[dict]:
    """crops (K, S, S, 3) uint8 → the face request."""
    prompt = FACE_PROMPT + (AGE_GENDER_PROMPT if age_gender else "")
    return [{"role": "user", "content": [text_part(prompt), *(image_part(c) for c in crops)]}]


def audio_messages(audio: np.ndarray) -> list[dict]:
    """(n,) float32 16 kHz → the audio-caption request (first ``ASR_MAX_S`` seconds)."""
    clip = audio[: int(ASR_MAX_S * AUDIO_RATE)]
    return [{"role": "user", "content": [text_part(AUDIO_PROMPT), audio_part(clip, AUDIO_RATE)]}]


def cue_text(cues: dict) -> str:
    names = (("scene", "Scene"), ("face", "Face"), ("transcript", "Speech transcript"),
             ("language", "Speech language"), ("audio_caption", "Voice"))
    return "\n".join(f"{title}: {cues[k] if cues.get(k) else '(not available)'}" for k, title in names)


def consistency_messages(cues: dict) -> list[dict]:
    return [{"role": "user", "content": CONSISTENCY_PROMPT.format(cues=cue_text(cues))}]


def review_messages(label: str, explanation: str, labels: list[str]) -> list[dict]:
    return [{"role": "user", "content": REVIEW_PROMPT.format(
        label=label, explanation=explanation, labels=", ".join(labels))}]


# ------------------------------------------------------------------------ the clip
def _local_inputs(video: Path, models: Models, settings: Settings):
    """Decode and analyse the clip locally: scene frames (T, H, W, 3) uint8, face crops
    (K, S, S, 3) uint8, audio (n,) float32 or None, (transcript, language)."""
    try:
        n = n_scene_frames(clip_duration(video), settings)
        frames = np.stack([_shrink(f, SCENE_MAX_SIDE) for f in file_window(video, n=n).frames])
    except (SourceError, ValueError) as e:
        raise ClipError("video", str(e)) from None
    tracker = (models.face_tracker or default_face_tracker)()
    try:
        span = file_window(video, n=settings.face_crops, tracker=tracker, crop_size=CROP_SIZE)
    except (SourceError, ValueError) as e:
        raise ClipError("video", str(e)) from None
    if span.face_track is None:
        raise ClipError("face", "no face found in the clip")
    crops = span.faces[span.face_present]
    audio, transcript, language = None, None, None
    if models.asr is not None or models.alm is not None:
        try:
            audio = decode_audio(video)
        except SourceError as e:
            raise ClipError("audio", str(e)) from None
        if audio is None or audio.size == 0:
            raise ClipError("audio", "no audio track")
        if models.asr is not None:
            try:
                transcript, language = models.asr(audio)
            except (RuntimeError, ValueError) as e:
                raise ClipError("asr", str(e)) from None
    return frames, crops, audio, transcript, language


def curate_clip(sample: dict, base_dir: Path, models: Models, settings: Settings,
                default_source: str = "default") -> Outcome:
    """Run the five stages on one manifest sample (which carries a gold ``label``)."""
    sid = sample["id"]
    video = Path(sample["video"]) if sample.get("video") else None
    if video is not None and not video.is_absolute():
        video = (Path(base_dir) / video).absolute()
    source, gold = source_of(sample, default_source), sample.get("label")
    cues: dict[str, Any] = {"scene": None, "face": None, "transcript": None, "language": None,
                            "audio_caption": None}
    clues = {"id": sid, "video": str(video) if video else None, "source": source, "source_label": gold,
             "cues": cues, "explanation": None, "labels": [], "intensity": None,
             "consistent": None, "reason": None, "score": None}
    stage = "video"
    try:
        if video is None:
            raise ClipError("video", "the sample has no video")
        if not isinstance(gold, str) or not gold.strip():
            raise ClipError("label", "the sample has no gold label")
        with models.local_lock:  # decoding, tracking and ASR: one clip at a time
            frames, crops, audio, cues["transcript"], cues["language"] = _local_inputs(video, models, settings)
        stage = "scene"
        cues["scene"] = models.vlm.ask(scene_messages(frames), parse_text, SCENE_TOKENS)
        stage = "face"
        cues["face"] = models.vlm.ask(face_messages(crops, settings.age_gender), parse_text, FACE_TOKENS)
        if models.alm is not None:
            stage = "audio_caption"
            cues["audio_caption"] = models.alm.ask(audio_messages(audio), parse_text, AUDIO_TOKENS)
        stage = "consistency"
        c = models.llm.ask_json(consistency_messages(cues), parse_consistency, CONSISTENCY_TOKENS,
                                CONSISTENCY_FORMAT)
        clues.update(explanation=c["explanation"], labels=c["labels"], intensity=c["intensity"],
                     consistent=c["consistent"], reason=c["reason"])
        if not c["consistent"]:
            return Outcome("rejected", clues, {"id": sid, "stage": "consistency",
                                               "reason": c["reason"] or "inconsistent cues", "score": None})
        stage = "review"
        score = models.llm.ask_json(review_messages(gold, c["explanation"], c["labels"]), parse_review,
                                    REVIEW_TOKENS, REVIEW_FORMAT)
        clues["score"] = score
        if score < settings.threshold:
            return Outcome("rejected", clues, {"id": sid, "stage": "review",
                                               "reason": f"score {score} < threshold {settings.threshold}",
                                               "score": score})
        record = make_sample(
            sid, TASK_EMOTION_REASON, T.reasoning_instruction(random.Random(sid)),
            T.reasoning_answer(c["explanation"], c["labels"]), video=str(video),
            labels=c["labels"], score=score, intensity=c["intensity"], source_label=gold, source=source)
        return Outcome("kept", clues, record)
    except ClipError as e:
        return Outcome("failed", clues, {"id": sid, "error": str(e)})
    except (EndpointError, AnswerError) as e:
        return Outcome("failed", clues, {"id": sid, "error": f"{stage}: {e}"})
    except Exception as e:  # noqa: BLE001 - one clip's surprise must not end a run of thousands
        return Outcome("failed", clues, {"id": sid, "error": f"{stage}: {type(e).__name__}: {one_line(e)}"})
