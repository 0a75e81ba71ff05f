"""``dropnet train`` end to end, its generated flags, and the refusals a user can hit."""

from __future__ import annotations

import json

import pytest
import torch

from dropnet.cli import build_parser, main
from dropnet.trainer.cli_train import requested_config
from dropnet.trainer.data import load_dataset
from dropnet.trainer.loop import error_rate
from dropnet.trainer.rundir import load_run, read_config

FAST = ["--data", "digits", "--hidden", "256,256", "--lr", "1.0", "--device", "cpu"]


def _parse(*argv: str):
    return build_parser().parse_args(["train", *argv])


def test_train_writes_a_complete_run_dir_that_reproduces_its_test_error(tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    assert main(["train", *FAST, "--epochs", "3", "--out", str(run_dir)]) == 0

    assert sorted(p.name for p in run_dir.iterdir()) == [
        "checkpoint", "config.json", "curves.png", "metrics.jsonl", "model.safetensors"
    ]
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    final = read_config(run_dir)["final_metrics"]
    # seeds 0-4 reach 7.5-13.6% test error after 3 epochs at this lr; 20% leaves a margin
    assert final["test_error"] < 0.20
    assert final["epochs"] == 3

    config, _, model = load_run(run_dir)
    assert config.model.hidden == [256, 256] and config.optim.lr == 1.0
    test = load_dataset(config.data, config.seed).test
    assert error_rate(model, torch.from_numpy(test.x), torch.from_numpy(test.y)) == final["test_error"]
    out = capsys.readouterr().out
    assert f"best epoch {final['best_epoch']} of 3" in out
    assert f"test error {final['test_error']:.2%}" in out and str(run_dir) in out


def test_help_explains_every_flag_from_the_config_docstrings(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for fragment in [
        "--max-norm FLOAT|none Max-norm bound c on each hidden unit's incoming weight vector",
        "--batch-norm, --no-batch-norm",
        "--hidden INT,... Width of each fully connected hidden layer",
        "--data STR \"digits\" (bundled, no download)",
        "--momentum-start FLOAT Momentum at epoch 0. (default: 0.5)",
        "--resume", "--config PRESET", "--out RUN_DIR",
    ]:
        assert fragment in text


def test_flags_override_the_config_with_typed_values() -> None:
    config = requested_config(_parse(
        "--hidden", "1024,1024", "--retain", "0.8,0.5,0.5", "--max-norm", "none", "--batch-norm",
        "--max-norm-per-layer", "3,none,none", "--epochs", "7", "--data", "mnist", "--data-dir", "/d",
        "--val-size", "500", "--seed", "5", "--bf16", "--flavour", "inverted",
    ))
    assert config.model.hidden == [1024, 1024] and config.model.retain == [0.8, 0.5, 0.5]
    assert config.model.max_norm is None and config.model.max_norm_per_layer == [3.0, None, None]
    assert config.model.batch_norm is True and config.model.flavour == "inverted"
    assert (config.optim.epochs, config.data.name, config.data.data_dir) == (7, "mnist", "/d")
    assert config.data.val_size == 500
    assert (config.seed, config.bf16) == (5, True)
    untouched = requested_config(_parse("--no-batch-norm"))
    assert untouched.model.batch_norm is False and untouched.model.hidden == [1024, 1024]
    assert untouched.optim.lr == 0.05


def test_flags_override_a_preset_file(tmp_path) -> None:
    preset = tmp_path / "small.yaml"
    preset.write_text("model:\n  hidden: [64]\noptim:\n  lr: 0.3\n  epochs: 4\n")
    config = requested_config(_parse("--config", str(preset), "--epochs", "2"))
    assert (config.model.hidden, config.optim.lr, config.optim.epochs, config.preset) == ([64], 0.3, 2, "small")


def test_malformed_flag_value_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--hidden", "1024,wide"])
    assert exit_info.value.code == 2
    assert "expected an integer, got 'wide'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--flavour", "bogus"], "model.flavour must be one of ['paper', 'inverted', 'gaussian'], got 'bogus'"),
        (["--batch-norm", "--dropout-before-batch-norm"], "variance shift"),
        (["--device", "tpu"], "device must be one of"),
        (
            ["--epochs", "0", "--hidden", "64,0"],
            "model.hidden[1] must be an int >= 1, got 0\noptim.epochs must be an int >= 1, got 0",
        ),
        (["--resume"], "--resume needs --out RUN_DIR"),
    ],
)
def test_invalid_config_is_refused_with_an_explanation(argv, message, tmp_path, capsys) -> None:
    assert main(["train", *argv] + ([] if "--resume" in argv else ["--out", str(tmp_path / "run")])) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_non_empty_out_dir_is_refused_and_resume_checks_flags(tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    assert main(["train", *FAST, "--hidden", "16", "--epochs", "1", "--out", str(run_dir)]) == 0
    capsys.readouterr()
    assert main(["train", *FAST, "--hidden", "16", "--epochs", "1", "--out", str(run_dir)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(run_dir), "--lr", "0.1"]) == 2
    assert "optim.lr: the run has 1.0, requested 0.1" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(run_dir), "--epochs", "2"]) == 0
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    assert read_config(run_dir)["final_metrics"]["epochs"] == 2


def test_an_os_error_is_reported_with_its_reason_and_path_not_a_traceback(tmp_path, capsys) -> None:
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "run"
    assert main(["train", *FAST, "--hidden", "16", "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"dropnet train: error: Not a directory: {out}" in err
    assert "Traceback" not in err


def test_resume_of_a_run_dir_with_a_wrongly_typed_config_names_the_file_and_field(tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    assert main(["train", *FAST, "--hidden", "16", "--epochs", "1", "--out", str(run_dir)]) == 0
    raw = read_config(run_dir)
    raw["config"]["optim"]["epochs"] = "2"
    (run_dir / "config.json").write_text(json.dumps(raw))
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(run_dir)]) == 2
    assert f"{run_dir / 'config.json'}: invalid (optim.epochs must be an int, got '2'" in capsys.readouterr().err
