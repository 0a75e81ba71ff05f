"""The search: an Optuna study over a :mod:`~dropnet.trainer.tune.space`, each trial a normal training run.

- Sampler: TPE, seeded per session from the base config's seed and the number of trials the study
  already holds (a resumed study never replays the first session's random draws).
- Pruner: the median rule on each epoch's validation error (:func:`default_pruner`).
- Objective: the trial run's best validation error; the test split is never evaluated
  (``train(..., evaluate_test=False)``). A trial whose training diverges is pruned (its
  user attribute ``diverged`` says why), so that TPE learns to avoid its region.
- Storage: an RDB URL (default ``sqlite:///OUT/study.db``). Running again with the same output and
  storage continues the study up to ``trials`` finished (complete or pruned) trials; trials a
  killed process left running are marked failed and not counted. The base config and the space
  are stored with the study, and a resumed search must use the same (only ``device`` may change).
- Trial ``n`` trains into ``OUT/trials/NNNN``, a run directory ``dropnet export`` accepts.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from dropnet.core.errors import ConfigError
from dropnet.trainer.config import TrainConfig
from dropnet.trainer.loop import TrainingDiverged, diff_configs, train
from dropnet.trainer.tune.lock import exclusive
from dropnet.trainer.tune.space import Space, check_space, sample_config, space_to_dict

if TYPE_CHECKING:
    from dropnet.trainer.data import Dataset

logger = logging.getLogger(__name__)

STUDY_NAME = "dropnet-tune"
STUDY_DB = "study.db"
TRIALS_DIR = "trials"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
"""States of the trials a study's trial count counts."""
RESUMABLE_CHANGES = ("base_config.device",)
"""What a resumed search may change: continue on another device."""
PRUNER_STARTUP_TRIALS = 5
"""Trials that finish before the median rule prunes anything."""
PRUNER_WARMUP_EPOCHS = 3
"""The first epoch at which a trial can be pruned."""

TrialCallback = Callable[[optuna.Study, FrozenTrial], None]


@dataclass(frozen=True)
class Search:
    """What a search is: the base config (with the epoch budget and the seed), the space, where it goes."""

    base: TrainConfig
    space: Space
    out: Path
    storage: str | None = None
    """RDB URL of the study; None: ``sqlite:///OUT/study.db``."""

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.out / STUDY_DB).resolve()}"

    def definition(self) -> dict[str, Any]:
        """What is stored with the study and must match when it is resumed."""
        return {"base_config": self.base.to_dict(), "space": space_to_dict(self.space)}


def default_pruner() -> optuna.pruners.BasePruner:
    """Prune a trial whose best validation error so far is worse than the median of earlier trials' at that epoch."""
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_EPOCHS)


def describe_pruner(pruner: optuna.pruners.BasePruner | None) -> str:
    """The pruner in words, for the record."""
    if pruner is None:
        return (
            f"MedianPruner(n_startup_trials={PRUNER_STARTUP_TRIALS}, n_warmup_steps={PRUNER_WARMUP_EPOCHS}) "
            "on the validation error per epoch"
        )
    return type(pruner).__name__


def trial_dir(out: Path, number: int) -> Path:
    """The run directory of trial ``number``."""
    return Path(out) / TRIALS_DIR / f"{number:04d}"


def finished(study: optuna.Study) -> list[FrozenTrial]:
    """The trials the study's trial count counts (complete or pruned)."""
    return study.get_trials(deepcopy=False, states=FINISHED)


def run_search(
    search: Search, trials: int, timeout: float | None = None, dataset: Dataset | None = None,
    pruner: optuna.pruners.BasePruner | None = None, on_trial: TrialCallback | None = None,
) -> optuna.Study:
    """Run trials until the study holds ``trials`` finished ones (or ``timeout`` seconds pass); return the study.

    The base config and the space are checked first, and the dataset (``dataset`` or the base
    config's, loaded once for every trial) must have a validation split: nothing is written
    before. ``on_trial`` is called after each trial of this session.
    """
    search.base.validate()
    check_space(search.space, search.base)
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {timeout}")
    if dataset is None:
        from dropnet.trainer.data import load_dataset

        dataset = load_dataset(search.base.data, search.base.seed)
    if not len(dataset.val):
        raise ConfigError(
            "dropnet tune needs a validation split to score trials on, but the base config's data has none "
            f"(data.val_size {search.base.data.val_size}); expected val_size > 0 or unset"
        )
    with exclusive(search.out):
        study = open_study(search, pruner)
        remaining = trials - len(finished(study))
        if remaining <= 0:
            logger.info("the study holds %d finished trials (asked for %d); none run", trials - remaining, trials)
            return study
        logger.info("running up to %d trials (the study holds %d finished)", remaining, trials - remaining)
        study.optimize(
            _objective(search, dataset), n_trials=remaining, timeout=timeout,
            callbacks=[on_trial] if on_trial is not None else None,
        )
    return study


def open_study(search: Search, pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Create the study or load it to continue; fail the trials a dead process left running; seed the sampler."""
    try:
        study = optuna.create_study(
            storage=search.storage_url, study_name=STUDY_NAME, direction="minimize",
            pruner=pruner or default_pruner(), load_if_exists=True,
        )
    except (ValueError, ImportError, optuna.exceptions.OptunaError) as exc:
        raise ConfigError(
            f"--storage {search.storage_url!r} cannot be opened ({exc}); expected an RDB URL such as "
            "sqlite:///study.db"
        ) from None
    _adopt(study, search)
    _fail_interrupted(study)
    seed = session_seed(search.base.seed, len(study.trials))
    study.sampler = optuna.samplers.TPESampler(seed=seed)
    session = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "sampler_seed": seed,
        "trials_before": len(study.trials),
    }
    study.set_user_attr("sessions", [*study.user_attrs.get("sessions", []), session])
    return study


def session_seed(seed: int, trials_before: int) -> int:
    """The sampler's seed for a session that starts with ``trials_before`` trials in the study."""
    return int(np.random.SeedSequence((seed, trials_before)).generate_state(1, dtype=np.uint32)[0])


def _adopt(study: optuna.Study, search: Search) -> None:
    """Store the search's definition in a new study; refuse to continue a study defined otherwise."""
    definition = search.definition()
    stored = {key: study.user_attrs.get(key) for key in definition}
    if stored["base_config"] is None:
        trials = Path(search.out) / TRIALS_DIR
        if trials.is_dir() and any(trials.iterdir()):
            raise ConfigError(
                f"{trials} holds trial runs, but study {STUDY_NAME!r} in {search.storage_url} is new; "
                "pass the --storage of that search to continue it, or choose another --out"
            )
        for key, value in definition.items():
            study.set_user_attr(key, value)
        return
    differences = [
        f"{key}: the study has {old!r}, requested {new!r}"
        for key, (old, new) in diff_configs(stored, definition).items()
        if key not in RESUMABLE_CHANGES
    ]
    if differences:
        raise ConfigError(
            f"study {STUDY_NAME!r} in {search.storage_url} was started with another base config or space "
            f"({'; '.join(differences)}); continue it with the same --config, flags and --space, or start a "
            "new search with another --out and --storage"
        )


def _fail_interrupted(study: optuna.Study) -> None:
    """Mark the trials still listed as running (their process died: the output is locked) as failed."""
    interrupted = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in interrupted:
        study.tell(trial.number, state=TrialState.FAIL)
        logger.warning(
            "trial %d was left running by a process that stopped; marked failed and not counted", trial.number
        )
    if interrupted:
        earlier = study.user_attrs.get("interrupted_trials", [])
        study.set_user_attr("interrupted_trials", [*earlier, *(t.number for t in interrupted)])


def _objective(search: Search, dataset: Dataset) -> Callable[[optuna.Trial], float]:
    """Train one sampled config into its trial directory; its best validation error is the value."""

    def objective(trial: optuna.Trial) -> float:
        config = sample_config(search.space, search.base, trial)
        run_dir = trial_dir(search.out, trial.number)
        trial.set_user_attr("run_dir", str(run_dir))

        def report(record: dict[str, Any]) -> None:
            trial.report(record["val_error"], record["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation error {record['val_error']:.2%} at epoch {record['epoch']}")

        try:
            final = train(config, run_dir, dataset=dataset, on_epoch=report, evaluate_test=False)
        except TrainingDiverged as exc:
            trial.set_user_attr("diverged", str(exc))
            raise optuna.TrialPruned("training diverged") from None
        return final["val_error"]

    return objective
