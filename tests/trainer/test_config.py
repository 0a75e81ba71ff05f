"""Typed configuration: every value of a preset, config.json or dict is checked against its field's type."""

from __future__ import annotations

from pathlib import Path

import pytest

from dropnet.cli import main
from dropnet.core.errors import ConfigError
from dropnet.trainer.config import ModelConfig, TrainConfig, load_preset

WRONG_TYPES = [
    ("model:\n  hidden: 512\n", "model.hidden must be a list of int, got 512"),
    ("model:\n  hidden: [512, 2.5]\n", "model.hidden must be a list of int, got [512, 2.5]"),
    ("optim:\n  epochs: '10'\n", "optim.epochs must be an int, got '10'"),
    ("optim:\n  epochs: true\n", "optim.epochs must be an int, got True"),
    ("optim:\n  lr: '0.1'\n", "optim.lr must be a float, got '0.1' (a number written as text"),
    ("optim:\n  lr: 1e-3\n", "write exponents with a dot, e.g. 1.0e-3"),
    ("model:\n  retain: [0.8, x]\n", "model.retain must be a list of float, or null, got [0.8, 'x']"),
    ("model:\n  max_norm: '3'\n", "model.max_norm must be a float or null, got '3'"),
    (
        "model:\n  max_norm_per_layer: [3, null, big]\n",
        "model.max_norm_per_layer must be a list of (float or null), or null, got [3, None, 'big']",
    ),
    ("model:\n  batch_norm: 'yes'\n", "model.batch_norm must be a bool (true or false), got 'yes'"),
    ("model:\n  batch_norm: 1\n", "model.batch_norm must be a bool (true or false), got 1"),
    ("data:\n  name: 7\n", "data.name must be a string, got 7"),
    ("seed: 1.5\n", "seed must be an int, got 1.5"),
    ("model:\n  widths: [8]\n", "unknown key(s) ['widths'] in config section 'model'"),
    ("model: [8]\n", "config section 'model' must be a mapping, got list"),
]


@pytest.mark.parametrize(("text", "message"), WRONG_TYPES)
def test_a_preset_with_a_wrong_type_is_refused_by_field(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_preset(str(path))
    assert message in str(err.value)


def test_ints_become_floats_where_floats_are_due_and_nulls_stay() -> None:
    config = TrainConfig.from_dict(
        {
            "optim": {"lr": 1, "epochs": 3},
            "model": {"hidden": [8], "retain": [1, 0.5], "max_norm": None, "max_norm_per_layer": [3, None]},
            "data": {"data_dir": None},
        }
    )
    assert config.optim.lr == 1.0 and type(config.optim.lr) is float
    assert type(config.optim.epochs) is int
    assert config.model.retain == [1.0, 0.5] and all(type(p) is float for p in config.model.retain)
    assert config.model.max_norm_per_layer == [3.0, None] and type(config.model.max_norm_per_layer[0]) is float
    assert config.model.max_norm is None and config.data.data_dir is None
    config.validate()
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_a_config_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(ConfigError, match="a config must be a mapping of sections and settings, got list"):
        TrainConfig.from_dict([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [-1, 2**63, True, 1.5, "3"])
def test_validate_refuses_a_seed_outside_0_to_2_pow_63(seed: object) -> None:
    with pytest.raises(ConfigError, match=r"seed must be an integer with 0 <= seed < 2\*\*63, got"):
        TrainConfig(seed=seed).validate()  # type: ignore[arg-type]


def test_validate_accepts_the_extreme_seeds() -> None:
    for seed in (0, 2**63 - 1):
        TrainConfig(seed=seed).validate()


def test_a_nan_retain_probability_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"retain probabilities must lie in \(0, 1\], got nan"):
        ModelConfig(retain_hidden=float("nan")).validate()


def test_cli_reports_a_wrongly_typed_preset_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  hidden: 512\n")
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "dropnet train: error: model.hidden must be a list of int, got 512" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_an_unreadable_preset_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read as a YAML preset"):
        load_preset(str(tmp_path))  # a directory exists, but is no file
