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


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"config": None}, "expected an object under 'config', got None"),
        ({"input": [1, 8, 8]}, "expected an object under 'input', got [1, 8, 8]"),
        ({"config": {"seed": -1}}, "invalid (seed must be an integer with 0 <= seed < 2**63, got -1)"),
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
