"""The paper's Figure 11 from ``dropnet evaluate``'s JSON: the values drawn are the JSON's, and the CLI writes it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dropnet.cli import main
from dropnet.core.errors import DataError
from dropnet.quality import figure11 as fig11
from dropnet.trainer.cli_evaluate import parse_counts

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _result(**changes: object) -> dict:
    """A hand-made evaluate result: 5 repeats, k = 1, 2, 5, 100."""
    result = {
        "format": "dropnet-evaluate/1", "dataset": {"name": "mnist"}, "split": "test", "examples": 10000,
        "seed": 0, "repeats": 5, "seeds": [0, 1, 2, 3, 4], "weight_scaling_error": 0.0181,
        "mc": [
            {"k": 1, "error": 0.0412, "std": 0.0011, "errors": [0.04, 0.041, 0.042, 0.0415, 0.0415]},
            {"k": 2, "error": 0.0301, "std": 0.0009, "errors": []},
            {"k": 5, "error": 0.0222, "std": 0.0005, "errors": []},
            {"k": 100, "error": 0.0183, "std": 0.0002, "errors": []},
        ],
    }
    return {**result, **changes}


def _floats(values: object) -> np.ndarray:
    """A line's data as floats (errorbar keeps them as an object array)."""
    return np.asarray(values, dtype=np.float64)


def test_the_figure_draws_the_json_values_in_percent() -> None:
    data = fig11.figure11_data(_result())
    figure = fig11.figure11(data)
    (ax,) = figure.axes
    mc_line, ws_line = ax.lines[0], ax.lines[-1]
    np.testing.assert_allclose(_floats(mc_line.get_xdata()), [1, 2, 5, 100])
    np.testing.assert_allclose(_floats(mc_line.get_ydata()), [4.12, 3.01, 2.22, 1.83])
    np.testing.assert_allclose(ws_line.get_ydata(), [1.81, 1.81])
    (bars,) = ax.collections  # the error bars: one vertical segment per k, mean ± std
    segments = np.array([segment[:, 1] for segment in bars.get_segments()])
    np.testing.assert_allclose(segments, [[4.01, 4.23], [2.92, 3.10], [2.17, 2.27], [1.81, 1.85]])
    assert "5 seeds (0..4)" in ax.get_title() and "mnist test set" in ax.get_title()


def test_a_single_repeat_has_no_error_bars() -> None:
    result = _result(repeats=1, seeds=[3], mc=[{"k": 1, "error": 0.05}, {"k": 10, "error": 0.02}])
    figure = fig11.figure11(fig11.figure11_data(result))
    (ax,) = figure.axes
    assert not ax.collections and "seed 3" in ax.get_title()
    np.testing.assert_allclose(_floats(ax.lines[0].get_ydata()), [5.0, 2.0])


def test_the_png_is_written_from_a_json_file(tmp_path: Path) -> None:
    source = tmp_path / "evaluate.json"
    source.write_text(json.dumps(_result()))
    out = tmp_path / "figure11.png"
    assert fig11.main([str(source), str(out)]) == 0
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    assert fig11.main([str(tmp_path / "missing.json"), str(out)]) == 2
    assert fig11.main([str(source)]) == 2


def test_results_that_are_not_an_evaluate_json_are_refused_by_key() -> None:
    for changes, message in [
        ({"format": "dropnet-run/1"}, r"format 'dropnet-run/1'; expected 'dropnet-evaluate/1'"),
        ({"weight_scaling_error": 1.5}, r"weight_scaling_error must be an error rate in \[0, 1\], got 1.5"),
        ({"mc": []}, r"mc must be a non-empty list"),
        ({"mc": [{"k": 1, "error": 0.1}]}, r"mc\[0\].std must be an error rate"),
        ({"mc": [{"k": 0, "error": 0.1, "std": 0}]}, r"mc\[0\] must hold an integer k >= 1"),
        ({"mc": [{"k": 2, "error": 0.1, "std": 0}, {"k": 1, "error": 0.1, "std": 0}]}, r"distinct and increasing"),
        ({"repeats": 0}, r"repeats must be an integer >= 1"),
    ]:
        with pytest.raises(DataError, match=message):
            fig11.figure11_data(_result(**changes), where="e.json")
    with pytest.raises(DataError, match="expected 'dropnet-evaluate/1'"):
        fig11.figure11_data([1, 2])


def test_sample_counts_take_ranges() -> None:
    assert parse_counts("1..5,10") == [1, 2, 3, 4, 5, 10]
    assert parse_counts("1..100") == list(range(1, 101))
    assert parse_counts("3") == [3]


def test_dropnet_evaluate_writes_the_figure_of_its_result(tiny_run_dir: Path, tmp_path: Path, capsys) -> None:
    out, png = tmp_path / "result.json", tmp_path / "fig" / "figure11.png"
    argv = ["evaluate", str(tiny_run_dir), "--mc-samples", "1..3", "--repeats", "2", "--device", "cpu",
            "--json-out", str(out), "--figure", str(png)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert [entry["k"] for entry in result["mc"]] == [1, 2, 3]
    assert png.read_bytes().startswith(PNG_SIGNATURE) and f"figure: {png}" in capsys.readouterr().out
    drawn = _floats(fig11.figure11(fig11.figure11_data(result)).axes[0].lines[0].get_ydata())
    np.testing.assert_allclose(drawn, [100 * entry["error"] for entry in result["mc"]])
    with pytest.raises(SystemExit):
        main(["evaluate", str(tiny_run_dir), "--mc-samples", "5..1"])
    assert "expected a range A..B with A <= B, got '5..1'" in capsys.readouterr().err
