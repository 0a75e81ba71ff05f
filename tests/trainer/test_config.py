"""Typed configuration: every value of a preset, config.json or dict is checked against its field's type and range."""

from __future__ import annotations

from pathlib import Path

import pytest

from dropnet.cli import main
from dropnet.core.errors import ConfigError
from dropnet.trainer.config import DataConfig, ModelConfig, TrainConfig, load_preset

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
    ("model:\n  flavour: bogus\n", "model.flavour must be one of ['paper', 'inverted', 'gaussian'], got 'bogus'"),
    ("device: tpu\n", "device must be one of ['auto', 'cpu', 'cuda'], got 'tpu'"),
]

OUT_OF_RANGE = [
    ("optim:\n  epochs: 0\n", "optim.epochs must be an int >= 1, got 0"),
    ("optim:\n  lr_decay: 1.5\n", "optim.lr_decay must be a finite float in (0, 1], got 1.5"),
    ("optim:\n  momentum_end: 1\n", "optim.momentum_end must be a finite float in [0, 1), got 1"),
    ("optim:\n  lr: .inf\n", "optim.lr must be a finite float > 0, got inf"),
    ("model:\n  hidden: [64, 0]\n", "model.hidden[1] must be an int >= 1, got 0"),
    (
        "model:\n  max_norm_per_layer: [3, null, -1]\n",
        "model.max_norm_per_layer[2] must be a finite float > 0 or null, got -1",
    ),
    ("model:\n  conv_kernel: 4\n", "model.conv_kernel must be an odd int >= 1, got 4"),
    ("model:\n  retain: [0.8, 0.5]\n", "model.retain lists 2 probabilities but the network has 3 dropout sites"),
    ("data:\n  test_size: 1\n", "data.test_size must be a finite float in (0, 1), got 1"),
    ("seed: -1\n", "seed must be an int in [0, 2**63), got -1"),
]


@pytest.mark.parametrize(("text", "message"), WRONG_TYPES + OUT_OF_RANGE)
def test_a_preset_with_a_wrong_type_or_range_is_refused_by_field(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_preset(str(path))
    assert message in str(err.value)


def test_every_problem_is_named_on_its_own_line_unknown_keys_first() -> None:
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({"model": {"hidden": [0, "x", 2.5]}, "optim": {"lr": 0, "lrr": 1}, "seed": None})
    assert str(err.value).splitlines() == [
        "unknown key(s) ['lrr'] in config section 'optim'; expected ['batch_size', 'epochs', 'lr', 'lr_decay', "
        "'lr_schedule', 'lr_step_epochs', 'momentum_end', 'momentum_ramp_epochs', 'momentum_start', 'weight_decay']",
        "model.hidden[0] must be an int >= 1, got 0",
        "model.hidden must be a list of int, got [0, 'x', 2.5]",
        "optim.lr must be a finite float > 0, got 0",
        "seed must be an int, got None",
    ]


def test_building_from_keywords_reports_the_sections_problems_with_their_paths() -> None:
    with pytest.raises(ConfigError) as err:
        TrainConfig(model={"pool": 0}, data=DataConfig(), seed=-1)  # type: ignore[arg-type]
    assert str(err.value).splitlines() == [
        "model.pool must be an int >= 1, got 0",
        "seed must be an int in [0, 2**63), got -1",
    ]


def test_a_section_built_alone_names_its_fields_with_the_section() -> None:
    with pytest.raises(ConfigError, match=r"^model\.pool must be an int >= 1, got 0$"):
        ModelConfig(pool=0)


def test_validate_rechecks_fields_assigned_after_building() -> None:
    config = TrainConfig()
    config.model.hidden = [16]
    config.optim.epochs = "3"  # type: ignore[assignment]
    config.model.retain = [0.8, 0.5, 0.5]
    with pytest.raises(ConfigError) as err:
        config.validate()
    assert str(err.value).splitlines() == [
        "model.retain lists 3 probabilities but the network has 2 dropout sites (input, each conv block, each "
        "hidden layer)",
        "optim.epochs must be an int, got '3' (a number written as text: do not quote numbers, and write exponents "
        "with a dot, e.g. 1.0e-3)",
    ]
    config.optim.epochs, config.model.retain = 3, [0.8, 0.5]
    config.validate()


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
    with pytest.raises(ConfigError, match="a config must be a mapping, got list"):
        TrainConfig.from_dict([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [-1, 2**63, True, 1.5, "3"])
def test_validate_refuses_a_seed_outside_0_to_2_pow_63(seed: object) -> None:
    with pytest.raises(ConfigError, match=r"seed must be an int( in \[0, 2\*\*63\))?, got"):
        TrainConfig(seed=seed).validate()  # type: ignore[arg-type]


def test_validate_accepts_the_extreme_seeds() -> None:
    for seed in (0, 2**63 - 1):
        TrainConfig(seed=seed).validate()


def test_a_nan_retain_probability_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"model.retain_hidden must be a finite float in \(0, 1\], got nan"):
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
