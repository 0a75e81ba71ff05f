"""The search space: defaults, the YAML form, refusals naming parameter and value, sampling into a config."""

from __future__ import annotations

import pytest
from optuna.trial import FixedTrial

from dropnet.cli import main
from dropnet.core.errors import ConfigError
from dropnet.trainer.config import TrainConfig
from dropnet.trainer.tune.space import (
    PARAMETERS, LearningRate, RetainHidden, WeightDecay, check_space, default_space, load_space, parse_space,
    sample_config, space_to_dict,
)


def test_the_default_space_searches_every_parameter_that_applies_over_the_paper_ranges() -> None:
    mlp = default_space(TrainConfig())
    assert list(mlp) == [
        "retain_input", "retain_hidden", "max_norm", "lr", "momentum_end", "momentum_ramp_epochs", "lr_decay",
        "weight_decay",
    ]
    assert (mlp["retain_hidden"].low, mlp["retain_hidden"].high) == (0.4, 0.9)
    assert (mlp["max_norm"].low, mlp["max_norm"].high) == (2.0, 5.0)
    assert mlp["lr"].log and mlp["weight_decay"].log and mlp["weight_decay"].zero
    conv = TrainConfig()
    conv.model.arch = "conv"
    assert set(default_space(conv)) == set(PARAMETERS)


def test_a_yaml_space_lists_the_parameters_searched_and_empty_entries_take_the_default(tmp_path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("retain_hidden: {low: 0.3, high: 0.6}\nmax_norm: {}\nlr:\n")
    space = load_space(path)
    assert list(space) == ["retain_hidden", "max_norm", "lr"]
    assert (space["retain_hidden"].low, space["retain_hidden"].high) == (0.3, 0.6)
    assert space["max_norm"] == default_space(TrainConfig())["max_norm"]
    assert space["lr"] == LearningRate()
    assert parse_space(space_to_dict(space)) == space


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"retain_hidden": {"low": 0, "high": 0.5}}, r"retain_hidden\.low must be a finite float in \(0, 1\], got 0"),
        ({"retain_input": {"high": 1.2}}, r"retain_input\.high must be a finite float in \(0, 1\], got 1\.2"),
        ({"max_norm": {"low": 0, "high": 3}}, r"max_norm\.low must be a finite float > 0, got 0"),
        ({"max_norm": {"low": -1.0}}, r"max_norm\.low must be a finite float > 0, got -1\.0"),
        ({"retain_hidden": {"low": 0.8, "high": 0.5}}, r"retain_hidden: low 0\.8 > high 0\.5; expected low <= high"),
        ({"momentum_end": {"high": 1.0}}, r"momentum_end\.high must be a finite float in \[0, 1\), got 1\.0"),
        ({"momentum_ramp_epochs": {"low": 0, "high": 5, "log": True}}, r"momentum_ramp_epochs: log sampling needs low"),
        ({"dropout": {"low": 0.5}}, r"unknown search parameter\(s\) \['dropout'\]; expected some of \['lr', "),
        ({"lr": {"lo": 0.1}}, r"unknown key\(s\) \['lo'\] in config section 'lr'; expected \['high', 'log', 'low'\]"),
        ({"lr": 0.1}, r"config section 'lr' must be a mapping, got float"),
        ({}, r"a search space must be a non-empty mapping"),
    ],
)
def test_a_bad_range_is_refused_naming_the_parameter_the_value_and_what_is_allowed(raw, message) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_space(raw)


def test_a_space_that_does_not_fit_the_base_config_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"retain_conv is searched but the base config's model.arch is 'mlp'"):
        check_space(parse_space({"retain_conv": {}}), TrainConfig())
    explicit = TrainConfig()
    explicit.model.hidden, explicit.model.retain = [8], [0.8, 0.5]
    with pytest.raises(ConfigError, match=r"\['retain_hidden'\] are searched but the base config sets model.retain"):
        check_space(parse_space({"retain_hidden": {}}), explicit)
    constant = TrainConfig()
    constant.optim.lr_schedule = "constant"
    with pytest.raises(ConfigError, match=r"lr_decay is searched but .* 'constant'"):
        check_space(parse_space({"lr_decay": {}}), constant)


def test_a_bad_space_file_stops_the_command_before_any_study_or_trial_is_written(tmp_path, capsys) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("retain_hidden: {low: 0.0, high: 0.5}\n")
    out = tmp_path / "search"
    assert main(["tune", "--trials", "2", "--space", str(path), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = f"space file {path}: retain_hidden.low must be a finite float in (0, 1], got 0.0"
    assert err == [f"dropnet tune: error: {expected}"]
    assert not out.exists()


def test_sampling_sets_the_config_fields_and_the_trainer_checks_the_result(base) -> None:
    space = parse_space({"retain_hidden": {}, "lr": {}, "momentum_ramp_epochs": {}, "weight_decay": {}})
    values = {
        "retain_hidden": 0.6, "lr": 0.2, "momentum_ramp_epochs": 3, "use_weight_decay": True, "weight_decay": 1e-4,
    }
    config = sample_config(space, base, FixedTrial(values))
    assert (config.model.retain_hidden, config.optim.lr, config.optim.momentum_ramp_epochs) == (0.6, 0.2, 3)
    assert config.optim.weight_decay == 1e-4
    assert config.model.hidden == base.model.hidden and config.seed == base.seed  # the rest is the base config's
    no_decay = sample_config({"weight_decay": WeightDecay()}, base, FixedTrial({"use_weight_decay": False}))
    assert no_decay.optim.weight_decay == 0.0
    outside = pytest.warns(UserWarning, match="out of the range")  # FixedTrial returns it all the same
    refused = pytest.raises(ConfigError, match=r"model\.retain_hidden must be a finite float in \(0, 1\], got 1\.5")
    with outside, refused:
        sample_config({"retain_hidden": RetainHidden()}, base, FixedTrial({"retain_hidden": 1.5}))
