"""What a search leaves in its output directory besides the trial runs: ``tune.json``, ``best.yaml``, plots.

``tune.json`` records every trial (state, value, parameters, validation error per epoch, run
directory), the best, the counts, the base config and space, the sampler, the pruner, the
commands and seeds of every session and the versions. ``best.yaml`` is the best trial's full config
as a preset for ``dropnet train --config``, with comments saying where it came from.
"""

from __future__ import annotations

import logging
import shlex
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from dropnet.core.fileio import atomic_write_bytes, atomic_write_json
from dropnet.trainer.config import TrainConfig
from dropnet.trainer.rundir import read_config, versions
from dropnet.trainer.tune.plots import plot_importances, plot_parameter
from dropnet.trainer.tune.study import STUDY_NAME, Search, describe_pruner, trial_dir

logger = logging.getLogger(__name__)

TUNE_FORMAT = "dropnet-tune/1"
TUNE_FILE = "tune.json"
BEST_FILE = "best.yaml"
PLOTS_DIR = "plots"
IMPORTANCES_PLOT = "importances.png"


@dataclass(frozen=True)
class Outputs:
    """The files written, and the summary they hold."""

    summary: dict[str, Any]
    """The content of ``tune.json``."""
    tune_json: Path
    best_yaml: Path | None
    """None when no trial completed."""
    plots: list[Path]


def write_outputs(study: optuna.Study, search: Search, pruner: optuna.pruners.BasePruner | None = None) -> Outputs:
    """Write ``tune.json``, ``best.yaml`` (when a trial completed) and the plots into ``search.out``."""
    out = Path(search.out)
    trials = [trial_summary(t) for t in study.get_trials(deepcopy=False)]
    best = best_trial(study)
    importances = parameter_importances(study)
    plots = _plot(study, out / PLOTS_DIR, importances)
    best_yaml = write_best_preset(out / BEST_FILE, best, search) if best is not None else None
    summary = {
        "format": TUNE_FORMAT,
        "study": STUDY_NAME,
        "storage": search.storage_url,
        "objective": "minimise the best validation error of the trial's run (the test split is never evaluated)",
        "sampler": "TPESampler, seeded per session (sessions[].sampler_seed)",
        "pruner": describe_pruner(pruner),
        "command": sys.argv,
        "sessions": study.user_attrs.get("sessions", []),
        "interrupted_trials": study.user_attrs.get("interrupted_trials", []),
        "seed": search.base.seed,
        "versions": {**versions(), "optuna": optuna.__version__},
        **search.definition(),
        "counts": {state.name.lower(): sum(t["state"] == state.name for t in trials) for state in TrialState},
        "best": None if best is None else trial_summary(best),
        "best_preset": None if best_yaml is None else str(best_yaml),
        "importances": importances,
        "plots": [str(p) for p in plots],
        "trials": trials,
    }
    atomic_write_json(out / TUNE_FILE, summary)
    return Outputs(summary, out / TUNE_FILE, best_yaml, plots)


def trial_summary(trial: FrozenTrial) -> dict[str, Any]:
    """One trial as ``tune.json`` lists it."""
    curve = dict(sorted(trial.intermediate_values.items()))
    seconds = (
        (trial.datetime_complete - trial.datetime_start).total_seconds()
        if trial.datetime_complete and trial.datetime_start else None
    )
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "params": trial.params,
        "run_dir": trial.user_attrs.get("run_dir"),
        "epochs": len(curve),
        "best_epoch": min(curve, key=curve.__getitem__) if curve else None,
        "val_error_per_epoch": list(curve.values()),
        "diverged": trial.user_attrs.get("diverged"),
        "seconds": seconds,
    }


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The completed trial with the lowest value (the earliest on a tie), or None."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return min(complete, key=lambda t: (t.value, t.number)) if complete else None


def parameter_importances(study: optuna.Study) -> dict[str, float] | None:
    """Optuna's parameter importances (PED-ANOVA) over the completed trials; None when too few for it."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return None
    try:
        with warnings.catch_warnings(record=True) as caught:  # e.g. too few trials in some regime: say so once
            warnings.simplefilter("always")
            importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as exc:
        logger.info("no parameter importances: %s", exc)
        return None
    for warning in caught:
        logger.info("parameter importances: %s", warning.message)
    return {name: float(v) for name, v in importances.items()}


def write_best_preset(path: Path, best: FrozenTrial, search: Search) -> Path:
    """Write the best trial's full config (read back from its run directory) as a YAML preset."""
    config = TrainConfig.from_dict(read_config(trial_dir(search.out, best.number))["config"])
    config.preset = f"{search.base.preset or 'config'}-tuned"
    config.target = (
        f"best of a dropnet tune search from {search.base.preset or 'the default config'} "
        f"(trial {best.number}, validation error {best.value:.2%})"
    )
    header = [
        f"Best trial of dropnet tune study {STUDY_NAME!r} in {search.storage_url}:",
        f"trial {best.number}, best validation error {best.value:.4%} "
        f"(epoch {trial_summary(best)['best_epoch']} of {config.optim.epochs}).",
        f"Parameters searched: {best.params}",
        f"Made by: {shlex.join(sys.argv)}",
        f"Train it: dropnet train --config {path}",
    ]
    text = "".join(f"# {line}\n" for line in header) + yaml.safe_dump(config.to_dict(), sort_keys=False)
    atomic_write_bytes(path, text.encode())
    return path


def _plot(study: optuna.Study, directory: Path, importances: dict[str, float] | None) -> list[Path]:
    """Validation error against each parameter, and the importances; the paths written."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    names = sorted({name for t in trials for name in t.params})
    paths = []
    for name in names:
        paths.append(directory / f"val_error_vs_{name}.png")
        plot_parameter(trials, name, paths[-1])
    if importances:
        paths.append(directory / IMPORTANCES_PLOT)
        plot_importances(importances, paths[-1])
    return paths
