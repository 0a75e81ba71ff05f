"""``benchmarks/performance_md.py``: the README's performance figures are the result files' own."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.performance_md import BEGIN, END, RESULTS, render, rewrite

REPO = Path(__file__).resolve().parents[1]


def test_the_readme_holds_the_figures_of_the_committed_result_files() -> None:
    """Fails when a benchmark's JSON changed and ``python benchmarks/performance_md.py`` was not rerun."""
    generated = render(RESULTS)
    assert generated in (REPO / "README.md").read_text()
    assert "| training samples/s, dropnet / idiomatic PyTorch" in generated
    assert generated.count("- met") + generated.count("- **missed**") >= 9  # every server target, met or not


def test_rewrite_replaces_only_the_part_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{BEGIN}\nold figures\n{END}\nafter\n")
    rewrite(readme, f"{BEGIN}\nnew figures\n{END}")
    assert readme.read_text() == f"# title\n\nbefore\n{BEGIN}\nnew figures\n{END}\nafter\n"
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="must hold each marker once"):
        rewrite(readme, f"{BEGIN}\n{END}")
    assert readme.read_text() == "no markers\n"
