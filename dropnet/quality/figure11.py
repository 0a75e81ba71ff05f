"""The paper's Figure 11 from ``dropnet evaluate``'s JSON: MC model averaging over k nets vs weight scaling.

The test error of averaging the predictions of k sampled thinned networks is drawn against k, with
error bars of ± one standard deviation over the evaluation's repeats (seeds) where it has several,
next to the horizontal line of the weight-scaled network's error. Every value drawn is one of the
JSON's: ``mc[i].k``, ``mc[i].error``, ``mc[i].std`` and ``weight_scaling_error`` (as percentages).

    python -m dropnet.quality.figure11 runs/x/evaluate.json figure11.png
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dropnet.core.errors import DataError, DropnetError
from dropnet.core.fileio import atomic_write_bytes, read_json
from dropnet.core.jsonfields import is_int, is_number
from dropnet.quality.figures import png_bytes
from dropnet.trainer.evaluate import EVALUATE_FORMAT

if TYPE_CHECKING:
    from matplotlib.figure import Figure

@dataclass(frozen=True)
class Figure11Data:
    """The values Figure 11 draws, as fractions."""

    ks: tuple[int, ...]
    errors: tuple[float, ...]
    """Mean MC error over the repeats at each k."""
    stds: tuple[float, ...] | None
    """Standard deviation over the repeats at each k; None for a single repeat."""
    weight_scaling_error: float
    repeats: int
    title: str


def figure11_data(result: Mapping[str, Any], where: str = "the evaluate result") -> Figure11Data:
    """The values of an evaluate result (:data:`EVALUATE_FORMAT`), refused with a DataError naming the bad key."""
    if not isinstance(result, Mapping) or result.get("format") != EVALUATE_FORMAT:
        found = result.get("format") if isinstance(result, Mapping) else type(result).__name__
        raise DataError(f"{where}: format {found!r}; expected {EVALUATE_FORMAT!r} (the JSON of dropnet evaluate)")
    weight_scaling = _fraction(result.get("weight_scaling_error"), "weight_scaling_error", where)
    repeats = result.get("repeats", 1)
    if not is_int(repeats) or repeats < 1:
        raise DataError(f"{where}: repeats must be an integer >= 1, got {repeats!r}")
    entries = result.get("mc")
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{where}: mc must be a non-empty list of {{k, error[, std]}}, got {entries!r:.80}")
    ks, errors, stds = [], [], []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not is_int(entry.get("k")) or entry["k"] < 1:
            raise DataError(f"{where}: mc[{i}] must hold an integer k >= 1, got {entry!r:.80}")
        ks.append(entry["k"])
        errors.append(_fraction(entry.get("error"), f"mc[{i}].error", where))
        if repeats > 1:
            stds.append(_fraction(entry.get("std"), f"mc[{i}].std", where))
    if ks != sorted(set(ks)):
        raise DataError(f"{where}: mc's k values {ks} must be distinct and increasing")
    return Figure11Data(tuple(ks), tuple(errors), tuple(stds) if repeats > 1 else None, weight_scaling, repeats,
                        _title(result))


def _fraction(value: Any, key: str, where: str) -> float:
    if not is_number(value) or not 0 <= value <= 1:
        raise DataError(f"{where}: {key} must be an error rate in [0, 1], got {value!r}")
    return float(value)


def _title(result: Mapping[str, Any]) -> str:
    dataset = result.get("dataset")
    name = dataset.get("name", "?") if isinstance(dataset, Mapping) else "?"
    seeds = result.get("seeds") or [result.get("seed", "?")]
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} seeds ({seeds[0]}..{seeds[-1]})"
    return f"{name} {result.get('split', 'test')} set, {result.get('examples', '?')} examples, {seed_text}"


def figure11(data: Figure11Data) -> Figure:
    """The figure: MC error (± std over repeats) against k, and the weight-scaling line, in percent."""
    from matplotlib.figure import Figure  # no pyplot: no global state, the Agg canvas is used for PNGs

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    label = "Monte-Carlo model averaging" + (f" (mean ± std over {data.repeats} seeds)" if data.stds else "")
    ax.errorbar(
        data.ks, [100 * e for e in data.errors], yerr=None if data.stds is None else [100 * s for s in data.stds],
        marker="o", markersize=3, capsize=2, label=label,
    )
    ax.axhline(
        100 * data.weight_scaling_error, color="black", linestyle="--", label="approximate averaging by weight scaling"
    )
    ax.set(xlabel="number of sampled networks averaged (k)", ylabel="test classification error (%)",
           title=f"MC averaging vs weight scaling (Figure 11)\n{data.title}")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def write_figure11(result: Mapping[str, Any], path: str | Path, where: str = "the evaluate result") -> Figure11Data:
    """Write Figure 11 of the evaluate ``result`` to the PNG ``path`` (atomically); return what it draws."""
    data = figure11_data(result, where)
    atomic_write_bytes(path, png_bytes(figure11(data)))
    return data


def main(argv: list[str] | None = None) -> int:
    """``python -m dropnet.quality.figure11 EVALUATE_JSON PNG``: the figure of an existing result."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m dropnet.quality.figure11 EVALUATE_JSON PNG", file=sys.stderr)
        return 2
    try:
        write_figure11(read_json(Path(args[0]), DataError), args[1], where=args[0])
    except DropnetError as exc:
        print(f"figure11: error: {exc}", file=sys.stderr)
        return 2
    print(f"figure: {args[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
