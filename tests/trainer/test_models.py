"""Network builders: a config that does not fit the inputs is a ConfigError naming what was expected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dropnet.cli import main
from dropnet.core.errors import ConfigError, RunDirError
from tests.factories import DIGITS_SPEC
from dropnet.trainer.config import ModelConfig, TrainConfig
from dropnet.trainer.models import InputSpec, build_model, weight_layers
from dropnet.trainer.rundir import load_run, write_config

FLAT_SPEC = InputSpec((784,), 10, 33.4, 78.7, (0.0, 255.0), tuple("0123456789"))


def test_a_conv_net_on_flat_inputs_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"--arch conv \(model\.arch: conv\) needs \(channels, height, width\) "
                       r"inputs, got shape \(784,\)"):
        build_model(ModelConfig(arch="conv"), FLAT_SPEC)


def test_more_pooling_stages_than_the_input_allows_is_a_config_error() -> None:
    config = ModelConfig(arch="conv", conv_channels=[4, 4, 4, 4], hidden=[8])
    with pytest.raises(ConfigError, match="8×8 inputs allow at most 3 pooling stages of 2, got 4 conv blocks"):
        build_model(config, DIGITS_SPEC)
    config.conv_channels = [4, 4, 4]
    assert len(weight_layers(build_model(config, DIGITS_SPEC))) == 5  # 3 conv + 1 hidden + output: the limit fits


def test_cli_train_reports_a_conv_net_that_does_not_fit_the_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    flat = tmp_path / "flat.npz"
    np.savez(flat, x=np.random.default_rng(0).uniform(size=(60, 6)).astype(np.float32), y=np.arange(60) % 3)
    cases = [
        (["--data", str(flat), "--arch", "conv"], "needs (channels, height, width) inputs, got shape (6,)"),
        (["--arch", "conv", "--conv-channels", "4,4,4,4"], "8×8 inputs allow at most 3 pooling stages of 2"),
    ]
    for flags, message in cases:
        run_dir = tmp_path / "run"
        assert main(["train", *flags, "--hidden", "8", "--device", "cpu", "--out", str(run_dir)]) == 2
        err = capsys.readouterr().err
        assert "dropnet train: error: " in err and message in err and "Traceback" not in err
        assert not run_dir.exists()


def test_a_run_dir_whose_model_does_not_fit_its_input_is_a_run_dir_error(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = TrainConfig(model=ModelConfig(arch="conv", conv_channels=[4, 4, 4, 4], hidden=[8]))
    write_config(run_dir, config, DIGITS_SPEC, {"name": "synthetic"})
    with pytest.raises(RunDirError, match=r"config\.json: the recorded model does not fit the recorded input "
                       r"\(8×8 inputs allow at most 3"):
        load_run(run_dir)
