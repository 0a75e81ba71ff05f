"""Reading a run directory: every malformed config.json is a RunDirError naming the file and the problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dropnet.core.errors import RunDirError
from tests.factories import DIGITS_SPEC
from dropnet.trainer.config import ModelConfig, TrainConfig
from dropnet.trainer.rundir import load_config, read_config, write_config


def _run_dir(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    write_config(run_dir, TrainConfig(model=ModelConfig(hidden=[8])), DIGITS_SPEC, {"name": "synthetic"})
    return run_dir


def _edit(run_dir: Path, **changes: object) -> None:
    raw = json.loads((run_dir / "config.json").read_text())
    raw.update(changes)
    (run_dir / "config.json").write_text(json.dumps(raw))


def test_load_config_returns_what_write_config_wrote(tmp_path: Path) -> None:
    config, spec = load_config(_run_dir(tmp_path))
    assert config == TrainConfig(model=ModelConfig(hidden=[8])) and spec == DIGITS_SPEC


WRITTEN_BY_0_1 = {
    "model": {
        "arch": "mlp", "hidden": [1024, 1024, 1024], "activation": "relu", "maxout_pieces": 2,
        "conv_channels": [32, 64], "conv_kernel": 5, "pool": 2, "retain_input": 0.8, "retain_conv": 0.75, "retain_hidden": 0.5, "retain": None,
        "flavour": "paper", "max_norm": 3.5, "max_norm_per_layer": None, "batch_norm": False,
        "dropout_before_batch_norm": False,
    },
    "optim": {
        "epochs": 200, "batch_size": 100, "lr": 0.1, "lr_schedule": "exponential", "lr_decay": 0.98,
        "lr_step_epochs": 10, "momentum_start": 0.5, "momentum_end": 0.9, "momentum_ramp_epochs": 50,
        "weight_decay": 0.0,
    },
    "data": {"name": "mnist", "data_dir": None, "val_size": None, "test_size": 0.2},
    "seed": 0, "device": "auto", "bf16": False, "preset": "table2_relu_3x1024_maxnorm",
    "target": "Table 2: Dropout NN + max-norm, ReLU, 3 layers x 1024 units",
}
"""The ``config`` of a dropnet-run/1 config.json as dropnet 0.1's dataclass configs wrote it."""


def test_a_config_json_written_by_the_dataclass_configs_still_loads(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    _edit(run_dir, config=WRITTEN_BY_0_1)
    config, _ = load_config(run_dir)
    assert config.to_dict() == {**WRITTEN_BY_0_1, "init": None} and config.model.hidden == [1024, 1024, 1024]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"config": None}, "expected an object under 'config', got None"),
        ({"input": [1, 8, 8]}, "expected an object under 'input', got [1, 8, 8]"),
        ({"config": {"seed": -1}}, "invalid (seed must be an int in [0, 2**63), got -1)"),
        ({"config": {"model": {"hidden": 8}}}, "invalid (model.hidden must be a list of int, got 8)"),
        ({"input": {"shape": [1, 8, 8]}}, "incomplete, 'input' lacks 'num_classes'"),
    ],
)
def test_a_malformed_config_json_is_refused_by_name(tmp_path: Path, changes: dict, message: str) -> None:
    run_dir = _run_dir(tmp_path)
    _edit(run_dir, **changes)
    with pytest.raises(RunDirError) as err:
        load_config(run_dir)
    assert str(err.value) == f"{run_dir / 'config.json'}: {message}"


def test_an_unreadable_config_json_is_a_run_dir_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = _run_dir(tmp_path)

    def denied(path: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(RunDirError, match=r"config\.json: cannot be read \(Permission denied\)"):
        read_config(run_dir)
