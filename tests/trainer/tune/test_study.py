"""A search on the bundled digits: trials are run directories, the study resumes, pruning prunes, no test split."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from dropnet.cli import main
from dropnet.core.errors import ConfigError
from dropnet.trainer.metrics import read_records
from dropnet.trainer.rundir import read_config
from dropnet.trainer.tune.lock import exclusive
from dropnet.trainer.tune.outputs import write_outputs
from dropnet.trainer.tune.space import parse_space
from dropnet.trainer.tune.study import STUDY_NAME, Search, run_search, trial_dir
from tests.trainer.tune.conftest import TINY_SPACE

TINY_FLAGS = ["--data", "digits", "--hidden", "16", "--epochs", "2", "--batch-size", "200", "--device", "cpu"]


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _states(study: optuna.Study) -> dict[int, str]:
    return {t.number: t.state.name for t in study.trials}


@pytest.mark.slow
def test_a_tiny_search_writes_a_run_per_trial_and_a_best_preset_that_dropnet_train_reproduces(tmp_path, capsys) -> None:
    space_file, out = tmp_path / "space.yaml", tmp_path / "search"
    space_file.write_text(yaml.safe_dump(TINY_SPACE))
    argv = ["tune", "--trials", "3", "--space", str(space_file), "--out", str(out), "--seed", "7", *TINY_FLAGS]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "tune.json").read_text())

    assert summary["counts"]["complete"] == 3 and summary["seed"] == 7 and summary["versions"]["optuna"]
    assert parse_space(summary["space"]) == parse_space(TINY_SPACE) and summary["base_config"]["optim"]["epochs"] == 2
    running_best = 1.0
    for trial in summary["trials"]:
        run_dir = trial_dir(out, trial["number"])
        assert trial["run_dir"] == str(run_dir)
        config = read_config(run_dir)
        assert config["config"]["model"]["retain_hidden"] == trial["params"]["retain_hidden"]
        assert config["config"]["optim"]["lr"] == trial["params"]["lr"]
        records = read_records(run_dir / "metrics.jsonl")
        assert [r["test_error"] for r in records] == [None, None]  # the test split is never scored
        assert config["final_metrics"]["test_error"] is None
        assert trial["value"] == config["final_metrics"]["val_error"] == min(r["val_error"] for r in records)
        assert trial["val_error_per_epoch"] == [r["val_error"] for r in records]
        running_best = min(running_best, trial["value"])
        assert f"trial {trial['number']:>4}  complete  val error {trial['value']:.2%}  2 epochs" in printed
        assert f"best {running_best:.2%}" in printed.splitlines()[1 + trial["number"]]
    best = min(summary["trials"], key=lambda t: (t["value"], t["number"]))
    assert summary["best"] == best and "top 3 trials:" in printed and "trials: 3 complete" in printed
    for name in ("lr", "retain_hidden"):
        assert (out / "plots" / f"val_error_vs_{name}.png").read_bytes()[:4] == b"\x89PNG"

    best_yaml = out / "best.yaml"
    assert f"# trial {best['number']}, best validation error {best['value']:.4%}" in best_yaml.read_text()
    retrained = tmp_path / "retrained"
    assert main(["train", "--config", str(best_yaml), "--out", str(retrained)]) == 0
    expected = read_config(trial_dir(out, best["number"]))["config"]
    got = read_config(retrained)["config"]
    assert {**got, "preset": None, "target": None} == {**expected, "preset": None, "target": None}
    assert got["preset"] == "config-tuned"
    assert read_config(retrained)["final_metrics"]["val_error"] == best["value"]  # same config, seed, data

    from dropnet.exporter.package import export_package

    export_package(trial_dir(out, best["number"]), tmp_path / "package")  # a trial is a normal run directory
    assert json.loads((tmp_path / "package" / "manifest.json").read_text())["metrics"]["val_error"] == best["value"]


@pytest.mark.slow
def test_a_resumed_study_continues_without_repeating_or_touching_finished_trials(base, space, digits, tmp_path) -> None:
    search = Search(base, space, tmp_path / "search")
    run_search(search, 2, dataset=digits)
    finished = {n: _files(trial_dir(search.out, n)) for n in (0, 1)}
    killed = optuna.load_study(study_name=STUDY_NAME, storage=search.storage_url).ask()  # a process died in trial 2

    study = run_search(search, 4, dataset=digits)
    assert killed.number == 2
    assert _states(study) == {0: "COMPLETE", 1: "COMPLETE", 2: "FAIL", 3: "COMPLETE", 4: "COMPLETE"}
    assert len({tuple(sorted(t.params.items())) for t in study.trials if t.params}) == 4
    assert {n: _files(trial_dir(search.out, n)) for n in (0, 1)} == finished
    assert study.user_attrs["interrupted_trials"] == [2]
    seeds = [s["sampler_seed"] for s in study.user_attrs["sessions"]]
    assert len(seeds) == 2 and seeds[0] != seeds[1]

    assert len(run_search(search, 4, dataset=digits).trials) == 5  # already holds 4 finished: nothing runs
    outputs = write_outputs(study, search)
    assert outputs.summary["counts"] == {"running": 0, "complete": 4, "pruned": 0, "fail": 1, "waiting": 0}

    other = Search(base, parse_space({**TINY_SPACE, "lr": {"low": 0.05, "high": 0.4, "log": True}}), search.out)
    differs = r"another base config or space \(space\.lr\.high: the study has 0\.5, requested 0\.4\)"
    with pytest.raises(ConfigError, match=differs):
        run_search(other, 5, dataset=digits)
    with exclusive(search.out), pytest.raises(ConfigError, match="another dropnet tune is running"):
        run_search(search, 5, dataset=digits)


def test_a_pruner_that_prunes_after_epoch_one_leaves_one_epoch_run_directories(base, space, digits, tmp_path) -> None:
    search = Search(base, space, tmp_path / "search")
    study = run_search(search, 2, dataset=digits, pruner=AlwaysPrune())
    assert _states(study) == {0: "PRUNED", 1: "PRUNED"}
    for trial in study.trials:
        run_dir = trial_dir(search.out, trial.number)
        assert [r["epoch"] for r in read_records(run_dir / "metrics.jsonl")] == [1]
        final = read_config(run_dir)["final_metrics"]
        assert final["epochs"] == 1 and final["stopped_by"].startswith("TrialPruned: validation error")
        assert list(trial.intermediate_values) == [1]
    outputs = write_outputs(study, search, AlwaysPrune())
    assert outputs.best_yaml is None and outputs.summary["best"] is None and not (search.out / "best.yaml").exists()
    assert outputs.summary["counts"]["pruned"] == 2 and outputs.summary["pruner"] == "AlwaysPrune"


def test_a_diverging_trial_is_pruned_with_its_reason(base, digits, tmp_path) -> None:
    base.model.max_norm = None
    search = Search(base, parse_space({"lr": {"low": 1e6, "high": 1e6}}), tmp_path / "search")
    study = run_search(search, 1, dataset=digits)
    [trial] = study.trials
    assert trial.state == TrialState.PRUNED
    diverged = re.match(r"training diverged in epoch (\d+): the mean training loss", trial.user_attrs["diverged"])
    assert diverged, trial.user_attrs["diverged"]
    assert list(trial.intermediate_values) == list(range(1, int(diverged[1])))  # the epochs before it reported


def test_a_base_config_without_a_validation_split_is_refused_before_anything_is_written(base, space, tmp_path) -> None:
    base.data.val_size = 0
    with pytest.raises(ConfigError, match=r"needs a validation split .* \(data.val_size 0\)"):
        run_search(Search(base, space, tmp_path / "search"), 1)
    assert not (tmp_path / "search").exists()
