"""Where the BlazeFace ``.tflite`` detectors come from.

Current mediapipe wheels ship the Tasks runtime but no face-detection models, so
``live/`` resolves them itself, in this order: an explicit folder (``model_dir=``),
``$OMNI_FACE_MODELS``, the cache (``$OMNI_EMOTION_CACHE/face_models``), else the pinned
mediapipe wheel through ``pip download`` (the user's pip configuration applies),
sha256-checked and cached. A bad file in an explicit folder is an error, never a silent
fall-through to the download. The details: docs/live.md "Face models".
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from live.contract.files import write_whole

ENV_MODELS = "OMNI_FACE_MODELS"  # folder holding both .tflite files
ENV_CACHE = "OMNI_EMOTION_CACHE"  # root of the project's cache
DEFAULT_CACHE = Path.home() / ".cache" / "omni-emotion"

WHEEL_REQ = "mediapipe==0.10.21"
# One fixed wheel, so the same bytes come down on any machine (the .tflite files are
# platform-independent; this wheel is merely one that is sure to exist on the index).
WHEEL_PLATFORM = ("manylinux_2_28_x86_64", "3.11", "cp", "cp311")
WHEEL_DIR = "mediapipe/modules/face_detection/"

# name → sha256 of the file inside the 0.10.21 wheel.
FACE_MODELS = {
    "short": (
        "face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    ),
    "full": (
        "face_detection_full_range_sparse.tflite",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    ),
}


class FaceModelError(RuntimeError):
    """The face-detection models could not be found, fetched or verified."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_folder(folder: Path, origin: str) -> dict[str, Path]:
    """Both files present with the right sha256, or FaceModelError naming the problem."""
    out = {}
    for key, (name, digest) in FACE_MODELS.items():
        p = folder / name
        if not p.is_file():
            raise FaceModelError(f"{origin}: {p} is missing")
        got = _sha256(p)
        if got != digest:
            raise FaceModelError(f"{origin}: {p} has sha256 {got}, expected {digest}")
        out[key] = p
    return out


def cache_dir() -> Path:
    return Path(os.environ.get(ENV_CACHE) or DEFAULT_CACHE) / "face_models"


def _download_wheel(dest: Path) -> Path:
    plat, pyver, impl, abi = WHEEL_PLATFORM
    cmd = [
        sys.executable, "-m", "pip", "download", WHEEL_REQ, "--no-deps",
        "--only-binary=:all:", "--platform", plat, "--python-version", pyver,
        "--implementation", impl, "--abi", abi, "-d", str(dest), "-q",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("mediapipe-0.10.21-*.whl"))
    if r.returncode != 0 or not wheels:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        raise FaceModelError(
            f"could not download {WHEEL_REQ} to get the face models: {tail[0]} "
            f"(or put the .tflite files in a folder and set {ENV_MODELS})"
        )
    return wheels[0]


def fetch_face_models(target: Path) -> dict[str, Path]:
    """Download the wheel, extract and verify both files into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mp-wheel-") as tmp:
        wheel = _download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as z:
            for name, digest in FACE_MODELS.values():
                data = z.read(WHEEL_DIR + name)
                got = hashlib.sha256(data).hexdigest()
                if got != digest:
                    raise FaceModelError(
                        f"{wheel.name}:{WHEEL_DIR + name} has sha256 {got}, expected {digest}"
                    )
                with write_whole(target / name, "wb") as f:  # a concurrent reader never sees half
                    f.write(data)
    return _check_folder(target, "downloaded face models")


def resolve_face_models(model_dir: str | Path | None = None) -> dict[str, Path]:
    """Return ``{"short": Path, "full": Path}`` (see the module docstring for the order)."""
    if model_dir is not None:
        return _check_folder(Path(model_dir), "face model folder")
    env = os.environ.get(ENV_MODELS)
    if env:
        return _check_folder(Path(env), f"${ENV_MODELS}")
    cache = cache_dir()
    try:
        return _check_folder(cache, "face model cache")
    except FaceModelError:
        return fetch_face_models(cache)
