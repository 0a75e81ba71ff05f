"""``dropnet pretrain``: flags from the settings, presets, resume, and one-line refusals (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dropnet.cli import build_parser, main
from dropnet.core.errors import ConfigError
from dropnet.trainer.config import TrainConfig, load_preset
from dropnet.trainer.pretrain.cli_pretrain import requested_config
from dropnet.trainer.pretrain.config import PretrainConfig

FAST = ["--data", "digits", "--hidden", "16,8", "--epochs", "1", "--device", "cpu"]


def test_pretrain_writes_a_run_and_resume_of_a_finished_run_changes_nothing(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    assert main(["pretrain", *FAST, "--kind", "dae", "--out", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "pretrained 2 dae layers [16, 8]" in out and f"run dir: {run_dir}" in out
    assert f"dropnet train --init {run_dir} --hidden 16,8 --activation sigmoid" in out
    layers = [(run_dir / f"layer-{k}.safetensors").read_bytes() for k in (1, 2)]
    assert main(["pretrain", "--resume", "--out", str(run_dir), "--device", "cpu"]) == 0
    assert [(run_dir / f"layer-{k}.safetensors").read_bytes() for k in (1, 2)] == layers
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["pretrain"]["kind"] == "dae" and "final_metrics" in config


def test_flags_override_the_preset_and_reach_every_setting() -> None:
    args = build_parser().parse_args([
        "pretrain", "--config", "dbn_pretrain_mnist", "--kind", "dae", "--corruption", "gaussian",
        "--corruption-level", "0.3", "--cd-k", "5", "--visible", "gaussian", "--momentum", "0.8", "--seed", "3",
        "--data-dir", "/d",
    ])
    config = requested_config(args)
    assert config.preset == "dbn_pretrain_mnist" and config.pretrain.hidden == [500, 500, 2000]
    section = config.pretrain
    assert (section.kind, section.corruption, section.corruption_level) == ("dae", "gaussian", 0.3)
    assert (section.cd_k, section.visible, section.momentum, config.seed) == (5, "gaussian", 0.8, 3)
    assert (config.data.name, config.data.data_dir) == ("mnist", "/d")


def test_the_dbn_presets_describe_one_network() -> None:
    pretraining, finetuning = load_preset("dbn_pretrain_mnist"), load_preset("dbn_dropout_finetune")
    assert isinstance(pretraining, PretrainConfig) and isinstance(finetuning, TrainConfig)
    assert pretraining.pretrain.hidden == finetuning.model.hidden == [500, 500, 2000]
    assert finetuning.model.activation == "sigmoid" and finetuning.model.flavour == "paper"
    assert finetuning.model.resolved_retain() == [0.8, 0.5, 0.5, 0.5] and finetuning.model.max_norm is None
    assert pretraining.data == finetuning.data and pretraining.seed == finetuning.seed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cd-k", "0"], "pretrain.cd_k must be an int >= 1, got 0"),
        (["--kind", "gbm"], "pretrain.kind must be one of ['rbm', 'dae'], got 'gbm'"),
        (
            ["--corruption-level", "1.0"],
            "pretrain.corruption_level is the masking probability of corruption 'mask' and must be in [0, 1), got 1.0",
        ),
        (["--lr", "0"], "pretrain.lr must be a finite float > 0, got 0.0"),
        (["--hidden", "64,0"], "pretrain.hidden[1] must be an int >= 1, got 0"),
        (["--config", "mnist_cpu_budget"], "preset 'mnist_cpu_budget' is a training preset (it has no pretrain"),
        (["--config", "no_such_preset"], "preset 'no_such_preset' is neither a file nor a bundled preset"),
        (["--resume"], "--resume needs --out RUN_DIR"),
    ],
)
def test_bad_settings_are_refused_in_one_line(argv: list[str], message: str, tmp_path: Path, capsys) -> None:
    out = [] if "--resume" in argv else ["--out", str(tmp_path / "run")]
    assert main(["pretrain", *FAST, *argv, *out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"dropnet pretrain: error: {message}"), err
    assert not (tmp_path / "run").exists()


def test_a_preset_with_an_unknown_key_or_an_empty_stack_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("pretrain:\n  hiden: [8]\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['hiden'\] in config section 'pretrain'"):
        load_preset(str(path))
    path.write_text("pretrain:\n  hidden: []\n")
    with pytest.raises(ConfigError, match=r"pretrain.hidden must list at least one layer's units, got \[\]"):
        load_preset(str(path))


def test_dropnet_train_refuses_a_pretraining_preset(tmp_path: Path, capsys) -> None:
    assert main(["train", "--config", "dbn_pretrain_mnist", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "preset 'dbn_pretrain_mnist' is a pretraining preset (it has a pretrain section): run it with " \
        "`dropnet pretrain --config dbn_pretrain_mnist`" in err
