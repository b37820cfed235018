"""Config loading: defaults, YAML, overrides, unknown keys and wrong types."""

from __future__ import annotations

import pytest
import yaml

from drawmatch.cli import main, parse_job_config
from drawmatch.settings import (
    ConfigError,
    EmbedConfig,
    IndexConfig,
    load_config,
    save_config,
    to_dict,
)


def test_yaml_then_overrides_win(tmp_path):
    path = tmp_path / "embed.yaml"
    path.write_text("out: runs/a\nbatch_size: 8\nmodel:\n  backbone: resnet50\n  image_size: 224\n")
    cfg = load_config(EmbedConfig, path, ["batch_size=2", "model.pooling=gem"])
    assert cfg.out == "runs/a"
    assert cfg.batch_size == 2
    assert cfg.model.backbone == "resnet50"
    assert cfg.model.image_size == 224
    assert cfg.model.pooling == "gem"
    assert cfg.model.pretrained is True  # untouched default


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["batchsize=2"], "unknown config key(s) batchsize"),
        (["model.backbon=x"], "model.backbon"),
        (["batch_size=two"], "batch_size: expected int"),
        (["model.pretrained=maybe"], "model.pretrained: expected bool"),
        (["collections=drawing"], "collections: expected a list"),
        (["kind=bogus"], None),
        (["noequals"], "not of the form key=value"),
    ],
)
def test_bad_keys_and_types_are_clear_errors(overrides, message):
    cls = IndexConfig if overrides == ["kind=bogus"] else EmbedConfig
    with pytest.raises(ConfigError) as err:
        load_config(cls, None, overrides)
    if message:
        assert message in str(err.value)


def test_floats_in_exponent_form_are_floats():
    from drawmatch.settings import TrainConfig

    assert load_config(TrainConfig, None, ["lr=1e-4"]).lr == 1e-4
    with pytest.raises(ConfigError, match="lr: expected float"):
        load_config(TrainConfig, None, ["lr=fast"])


def test_unknown_key_in_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("out: x\nnum_actor: 3\n")
    with pytest.raises(ConfigError, match="num_actor"):
        load_config(EmbedConfig, path)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(EmbedConfig, None, ["model.backbone=tiny", "collections=[artwork]"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(EmbedConfig, tmp_path / "resolved.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "resolved.yaml").read_text()) == to_dict(cfg)


def test_cli_flag_is_an_override():
    cfg = parse_job_config("embed", ["--weights", "ckpt.pt", "out=o"])
    assert cfg.model.weights == "ckpt.pt"
    assert cfg.out == "o"


def test_cli_config_error_exits_2_before_work(tmp_path, capsys):
    assert main(["embed", f"out={tmp_path}", "bogus=1"]) == 2
    assert "config error" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was written


def test_cli_unknown_job(capsys):
    assert main(["nope"]) == 2
    assert "unknown job" in capsys.readouterr().err


def test_every_example_config_loads():
    from pathlib import Path

    from drawmatch.cli import JOBS

    configs = sorted((Path(__file__).resolve().parents[1] / "jobs" / "configs").glob("*.yaml"))
    assert len(configs) >= 10
    for path in configs:
        job = path.stem.removesuffix("-laptop")
        load_config(JOBS[job][0], path)  # raises on any unknown key or wrong type
