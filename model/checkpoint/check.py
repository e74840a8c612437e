"""The one check of a checkpoint folder before anything loads: config.json parsed and
its fields typed, each safetensors file's header read. Light on purpose: a command line
runs it before importing the model code (seconds of transformers and quantization
libraries), so a missing or damaged checkpoint is reported at once.
"""
from __future__ import annotations

import json
from pathlib import Path

from live.contract.cli import CliError, one_line


class CheckpointMissing(CliError, FileNotFoundError):
    """No checkpoint (or a weights file missing) at the given folder; a command line
    reports it as bad input (exit 2)."""


class CheckpointDamaged(CliError, ValueError):
    """A checkpoint file that cannot be parsed (truncated, garbage); exit 2 too."""


def check_checkpoint(path: str | Path, weights: bool = True) -> Path:
    """The one check of a checkpoint folder before anything loads (cheap: config.json is
    parsed and, with `weights`, each safetensors file's header read). Raises
    `CheckpointMissing` (a FileNotFoundError) or `CheckpointDamaged` (a ValueError),
    both `live.contract.cli.CliError`s (exit 2), naming the file and what to do."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    config = path / "config.json"
    if not config.is_file():
        raise CheckpointMissing(f"no Omni-Emotion checkpoint at {path} (config.json missing)")
    try:
        fields = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointDamaged(f"{config} is damaged ({one_line(err)}); rebuild or re-download the checkpoint") from None
    _check_config_fields(config, fields)
    if not weights:
        return path
    index = path / "model.safetensors.index.json"
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else ["model.safetensors"]
    except (ValueError, KeyError, AttributeError) as err:
        raise CheckpointDamaged(f"{index} is damaged ({one_line(err)}); rebuild or re-download the checkpoint") from None
    for name in shards:
        weights = path / name
        if not weights.is_file():
            raise CheckpointMissing(f"{weights} is missing; rebuild or re-download the checkpoint")
        try:
            with safe_open(str(weights), "pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise CheckpointDamaged(f"{weights} is damaged ({one_line(err)}); rebuild or re-download the checkpoint") from None
    return path


def _check_config_fields(config: Path, fields) -> None:
    """Every field of `config` (config.json, parsed) has its declared type
    (`model.net.config.check_config_fields`); else `CheckpointDamaged` naming it."""
    from model.net.config import check_config_fields

    if not isinstance(fields, dict):
        raise CheckpointDamaged(f"{config} is damaged (not a JSON object); rebuild or re-download the checkpoint")
    try:
        check_config_fields(fields)
    except (ValueError, KeyError) as err:
        raise CheckpointDamaged(f"{config}: {one_line(err)}; fix that field or rebuild the checkpoint") from None
