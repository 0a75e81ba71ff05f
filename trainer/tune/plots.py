"""PNG plots of a search: validation error against one parameter, and the parameter importances."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from dropnet.core.fileio import atomic_write


def plot_parameter(trials: Sequence[FrozenTrial], name: str, path: Path) -> None:
    """Validation error (%) of each trial that sampled ``name`` against its value.

    Completed trials show their best validation error; pruned ones the last error they reported
    (a pruned trial that reported none, e.g. diverged in its first epoch, is left out).
    """
    from matplotlib.figure import Figure  # heavy import, only needed here; no pyplot global state

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    shown = [t for t in trials if name in t.params]
    distribution = shown[0].distributions[name] if shown else None
    categories = list(distribution.choices) if isinstance(distribution, CategoricalDistribution) else None

    def position(trial: FrozenTrial) -> float:
        value = trial.params[name]
        return float(categories.index(value)) if categories is not None else float(value)

    complete = [t for t in shown if t.state == TrialState.COMPLETE]
    pruned = [t for t in shown if t.state == TrialState.PRUNED and t.intermediate_values]
    if complete:
        ax.scatter([position(t) for t in complete], [100 * t.value for t in complete], label="complete (best)")
    if pruned:
        ax.scatter(
            [position(t) for t in pruned], [100 * t.intermediate_values[max(t.intermediate_values)] for t in pruned],
            marker="x", label="pruned (last reported val error)",
        )
    if categories is not None:
        ax.set_xticks(range(len(categories)), [str(c) for c in categories])
    elif isinstance(distribution, (FloatDistribution, IntDistribution)) and distribution.log:
        ax.set_xscale("log")
    ax.set(xlabel=name, ylabel="validation error (%)", title=f"Validation error against {name}")
    ax.grid(alpha=0.3)
    if complete or pruned:
        ax.legend()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def plot_importances(importances: dict[str, float], path: Path) -> None:
    """Horizontal bars of the parameter importances (the largest on top)."""
    from matplotlib.figure import Figure

    names = list(importances)[::-1]
    fig = Figure(figsize=(6, 1 + 0.4 * len(names)), layout="constrained")
    ax = fig.subplots()
    ax.barh(names, [importances[n] for n in names])
    ax.set(xlabel="importance (PED-ANOVA, normalised to sum 1)", title="Parameter importances for validation error")
    ax.grid(alpha=0.3, axis="x")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
