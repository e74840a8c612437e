"""`load_analyser(spec, plan, device)`: the one way to get an analyser, used by the page
(`model.serve.serving`), `live.run`, `model.serve.infer`, the pool's replicas and the
quantization harness (`quant.experiments`).

A precision plan needs a loader that applies it (`model.checkpoint.loading.Loader`):
the command lines (composition roots) pass `quant.load_model`, or the pool its name
"quant:load_model" (resolved on the replica); model/ never imports quant/ itself.
"""
from __future__ import annotations

import importlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from model.serve.generate import ANALYSIS_MAX_NEW_TOKENS, TINY_MAX_NEW_TOKENS

if TYPE_CHECKING:
    from model.checkpoint.loading import Loader
    from model.serve.analyser import OmniEmotionAnalyser

PLAN_LOADER = "quant:load_model"  # the name a composition root gives a replica


@dataclass(frozen=True)
class Composed:
    """A spec of public hub parts composed into a model (`compose_from_pretrained`):
    ``preset`` and the local snapshot folders of its ``base`` and ``audio`` checkpoints.
    Its face and audio projectors are untrained, so both branches are fed as missing."""

    preset: str
    base: str
    audio: str


def refuse_plan_for_composed(plan) -> None:
    """ValueError when ``plan`` is asked of composed hub parts (a plan loads a folder)."""
    if plan:
        raise ValueError(f"plan {plan!r} needs a checkpoint folder: build one with "
                         "`python -m model.checkpoint.build --preset 0.5b --from-pretrained --out DIR` "
                         "and start with --model DIR")


def plan_loader(plan: str | None, loader: "Loader | str | None") -> "Loader | None":
    """The callable that applies ``plan`` (None without a plan); ``loader`` may be a
    "module:function" name. ValueError when a plan has no loader."""
    if not plan:
        return None
    if loader is None:
        raise ValueError(f"plan {plan!r} needs a loader that applies it (quant.load_model)")
    if isinstance(loader, str):
        module, _, name = loader.partition(":")
        loader = getattr(importlib.import_module(module), name)
    return loader


def load_analyser(spec: "str | Path | Composed", plan=None, device: str = "cpu",
                  loader: "Loader | str | None" = None, max_new_tokens: int = ANALYSIS_MAX_NEW_TOKENS,
                  **kwargs) -> "OmniEmotionAnalyser":
    """An analyser of ``spec``: "tiny" (the random test model, its answer capped at
    `TINY_MAX_NEW_TOKENS`), `Composed` hub parts, or a checkpoint folder, loaded as saved
    (`model.checkpoint.loading.load`) or with ``plan`` (a name or a plan object) applied
    by ``loader``. ``kwargs`` go to `OmniEmotionAnalyser` (prompt, options, name, ...)."""
    from model.checkpoint.loading import build_tiny, compose_from_pretrained, load
    from model.serve.analyser import OmniEmotionAnalyser

    if isinstance(spec, Composed):
        refuse_plan_for_composed(plan)
        model, processor = compose_from_pretrained(spec.preset, spec.base, spec.audio, face=None)
        kwargs = {"name": f"omni-emotion-{spec.preset}", "use_faces": False, "use_audio": False, **kwargs}
        return OmniEmotionAnalyser(model.to(device), processor, max_new_tokens=max_new_tokens, **kwargs)
    apply = plan_loader(plan, loader)
    if str(spec) == "tiny":
        kwargs.setdefault("name", "tiny")
        max_new_tokens = min(max_new_tokens, TINY_MAX_NEW_TOKENS)
        if apply is None:
            model, processor = build_tiny()
            return OmniEmotionAnalyser(model.to(device), processor, max_new_tokens=max_new_tokens, **kwargs)
        spec = tempfile.mkdtemp(prefix="omni-tiny-")  # a plan loads from a folder
        build_tiny(out=spec)
    kwargs.setdefault("name", Path(spec).name)
    model, processor = load(spec, device=device) if apply is None else apply(spec, plan, device)
    return OmniEmotionAnalyser(model, processor, max_new_tokens=max_new_tokens, **kwargs)
