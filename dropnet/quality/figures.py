"""The report's figures, drawn from the JSON-able data the report records (so every value drawn is in report.json).

matplotlib without pyplot (no global state; PNGs through the Agg canvas). Each function takes the
figure's data as :mod:`dropnet.quality.report` stores it under ``figures`` and returns a Figure;
:func:`png_bytes` renders one.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MODE_TITLES = {"deterministic": "weight scaling (deterministic)", "mc": "MC dropout"}


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure  # heavy import, only when drawing

    return Figure(figsize=(width, height), layout="constrained")


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """``fig`` rendered as PNG bytes (Agg)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _values(items: Sequence[float | None]) -> list[float]:
    """JSON numbers with None (an empty bin) as NaN, which matplotlib leaves out."""
    return [float("nan") if v is None else float(v) for v in items]


def reliability_figure(data: Mapping[str, Any]) -> Figure:
    """Accuracy against mean confidence per equal-width bin, for each curve (before/after calibration) of one mode,
    above the bins' row counts.

    ``data``: ``mode``, ``curves`` {key: {label, edges, confidence, accuracy, count, ece}}.
    """
    fig = _figure(6, 6.5)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot([0, 1], [0, 1], color="gray", linestyle=":", label="perfect calibration")
    for curve in data["curves"].values():
        top.plot(_values(curve["confidence"]), _values(curve["accuracy"]), marker="o", markersize=4,
                 label=f"{curve['label']} (ECE {100 * curve['ece']:.2f}%)")
        bottom.stairs(curve["count"], curve["edges"], label=curve["label"])
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02),
            title=f"Reliability: {MODE_TITLES.get(data['mode'], data['mode'])}")
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    bottom.set(xlabel="confidence (max probability)", ylabel="rows per bin", yscale="log")
    bottom.grid(alpha=0.3)
    return fig


def histograms_figure(data: Mapping[str, Any]) -> Figure:
    """One panel per quantity (predictive entropy per mode, mutual information): the fraction of each set's rows
    per bin, the in-distribution set and every OOD set as steps.

    ``data``: ``panels`` [{title, edges, fractions {set name: [fraction per bin]}}].
    """
    panels = data["panels"]
    fig = _figure(5 * len(panels), 4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        for name, fractions in panel["fractions"].items():
            ax.stairs(fractions, panel["edges"], label=name, linewidth=1.5)
        ax.set(title=panel["title"], xlabel=panel["xlabel"], ylabel="fraction of the set's rows", yscale="log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    return fig


def risk_coverage_figure(data: Mapping[str, Any]) -> Figure:
    """Selective prediction: the error rate of the rows kept against the fraction kept (most confident first),
    one curve per mode.

    ``data``: ``curves`` {mode: {coverage, risk, aurc}}.
    """
    fig = _figure(6, 4.5)
    ax = fig.subplots()
    for mode, curve in data["curves"].items():
        ax.plot(curve["coverage"], [100 * r for r in curve["risk"]],
                label=f"{MODE_TITLES.get(mode, mode)} (AURC {100 * curve['aurc']:.3f}%)")
    ax.set(xlabel="coverage (fraction of rows kept, most confident first)", ylabel="error among kept rows (%)",
           xlim=(0, 1), title="Selective prediction (risk–coverage)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig
