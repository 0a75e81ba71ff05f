"""The ``[train]`` extra: its module list matches pyproject.toml, and without it the CLI and the API say what to install."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dropnet
from dropnet import extras
from dropnet.cli import build_parser, main
from dropnet.extras import TRAIN_MODULES, MissingExtraError

REPO = Path(__file__).resolve().parents[1]
ABSENT = "dropnet_test_absent_module"


def normalized(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def test_train_modules_are_the_train_extra() -> None:
    tomllib = pytest.importorskip("tomllib")
    train = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["train"]
    declared = {normalized(re.match(r"[A-Za-z0-9._-]+", requirement).group()) for requirement in train}
    providers = importlib.metadata.packages_distributions()
    assert {normalized(providers[module][0]) for module in TRAIN_MODULES} == declared


@pytest.fixture
def without_train(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the [train] extra is missing one module."""
    monkeypatch.setattr(extras, "TRAIN_MODULES", (*TRAIN_MODULES, ABSENT))
    monkeypatch.delitem(vars(dropnet), "train", raising=False)  # forget a cached lazy import


@pytest.mark.usefixtures("without_train")
@pytest.mark.parametrize("argv", [["train", "--preset", "digits_demo", "--epochs", "1"], ["export", "--help"],
                                  ["evaluate"], ["demo", "-h"]])
def test_a_training_command_without_the_extra_exits_2_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f'dropnet {argv[0]}: error: needs the training extra: pip install "dropnet[train]" '
                            f"({ABSENT} is not installed)\n")


@pytest.mark.usefixtures("without_train")
def test_help_and_the_serving_commands_work_without_the_extra() -> None:
    help_text = " ".join(build_parser().format_help().split())
    assert "train a dropout network and write a run directory (needs the [train] extra)" in help_text
    assert "(needs the [train] extra)" not in help_text.partition("predict")[2].partition("demo")[0]
    with pytest.raises(MissingExtraError, match=rf"pip install \"dropnet\[train\]\" \({ABSENT} is not installed\)"):
        from dropnet import train  # noqa: F401
    assert dropnet.Predictor.__name__ == "Predictor"


PROBE = """
import json, sys
import dropnet
eager = sorted(name for name in sys.modules if name.startswith("dropnet."))
from dropnet.cli import build_parser
build_parser()
dropnet.Predictor
print(json.dumps({"eager": eager, "heavy": sorted({"torch", "grpc"} & set(sys.modules))}))
"""


def test_the_public_api_is_lazy_and_the_cli_parser_and_the_predictor_import_no_torch_nor_grpc() -> None:
    probe = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True, text=True)
    assert json.loads(probe.stdout) == {"eager": [], "heavy": []}
    assert {"Predictor", "export_package", "train"} <= set(dir(dropnet))
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        dropnet.nothing  # noqa: B018
