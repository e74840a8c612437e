"""Every field of a checkpoint's config.json is checked against its declared type when
the checkpoint is checked or loaded; a wrong-typed field is refused naming it."""
from __future__ import annotations

import json
import shutil

import pytest

from live.contract.cli import EXIT_USAGE
from model.checkpoint.check import CheckpointDamaged, check_checkpoint
from model.checkpoint.loading import load
from model.net.config import OmniEmotionConfig, check_config_fields
from model.net.presets import PRESETS, preset_config


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_and_the_defaults_pass(name):
    check_config_fields(json.loads(json.dumps(preset_config(name).to_dict())))
    check_config_fields(json.loads(json.dumps(OmniEmotionConfig().to_dict())))


@pytest.mark.parametrize("path,value,field", [
    (("base_config", "text_config", "hidden_size"), "64", "base_config.text_config.hidden_size"),
    (("face_config", "depths"), [1, "1", 1, 1], "face_config.depths"),
    (("trim_audio",), "yes", "trim_audio"),  # was accepted: a truthy string
    (("num_frames",), 8.5, "num_frames"),
    (("audio_config", "d_model"), [64], "audio_config.d_model"),
    (("absent_audio_seconds",), True, "absent_audio_seconds"),
])
def test_a_wrong_typed_field_is_refused_naming_it(tmp_path, tiny_checkpoint, path, value, field):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointDamaged, match=rf"field {field} must be"):
        check_checkpoint(ckpt)
    with pytest.raises(CheckpointDamaged, match=rf"field {field} must be"):
        load(ckpt)


def test_the_untouched_tiny_checkpoint_passes_and_a_cli_names_the_field(tmp_path, tiny_checkpoint, capsys):
    from model.train.cli import main

    check_checkpoint(tiny_checkpoint)
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["audio_pool_stride"] = "3"
    (ckpt / "config.json").write_text(json.dumps(config))
    code = main(["--phase", "1", "--model", str(ckpt), "--data", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE and len(err) == 1 and "field audio_pool_stride must be int" in err[0], err
