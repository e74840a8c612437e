"""`load_analyser(spec, plan, device)`: the one way to get an analyser, used by the page
(`model.serve.serving`), `live.run`, `model.serve.infer` and the pool's replicas.

A precision plan needs a loader that applies it (`model.checkpoint.loading.Loader`):
the command lines (composition roots) pass `quant.load_model`, or the pool its name
"quant:load_model" (resolved on the replica); model/ never imports quant/ itself.
"""
from __future__ import annotations

import importlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from model.serve.generate import ANALYSIS_MAX_NEW_TOKENS, TINY_MAX_NEW_TOKENS

if TYPE_CHECKING:
    from model.checkpoint.loading import Loader
    from model.serve.analyser import OmniEmotionAnalyser

PLAN_LOADER = "quant:load_model"  # the name a composition root gives a replica


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


def load_analyser(spec: str | Path, plan: str | None = None, device: str = "cpu",
                  loader: "Loader | str | None" = None, max_new_tokens: int = ANALYSIS_MAX_NEW_TOKENS,
                  **kwargs) -> "OmniEmotionAnalyser":
    """An analyser of ``spec``: "tiny" (the random test model, its answer capped at
    `TINY_MAX_NEW_TOKENS`) or a checkpoint folder, loaded as saved
    (`model.checkpoint.loading.load`) or with ``plan`` applied by ``loader``.
    ``kwargs`` go to `OmniEmotionAnalyser` (prompt, options, name, ...)."""
    from model.checkpoint.loading import build_tiny, load
    from model.serve.analyser import OmniEmotionAnalyser

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
