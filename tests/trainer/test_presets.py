"""Every bundled preset loads, validates and builds its network."""

import pytest

from tests.factories import DIGITS_SPEC
from dropnet.trainer.config import load_preset, list_presets
from dropnet.trainer.models import InputSpec, build_model, dropout_layers, weight_layers

MNIST_SPEC = InputSpec((1, 28, 28), 10, 33.4, 78.7, (0.0, 255.0), tuple("0123456789"))


@pytest.mark.parametrize("name", list_presets())
def test_preset_builds(name: str) -> None:
    config = load_preset(name)
    config.validate()
    assert config.preset == name and config.target
    spec = MNIST_SPEC if config.data.name == "mnist" else DIGITS_SPEC
    model = build_model(config.model, spec)
    assert [d.retain for d in dropout_layers(model)] == config.model.resolved_retain()
    assert len(weight_layers(model)) == len(config.model.resolved_max_norm())


def test_table2_rows_and_baselines_are_bundled() -> None:
    names = set(list_presets())
    assert {
        "table2_relu_3x1024_maxnorm", "table2_relu_3x2048_maxnorm", "table2_relu_2x4096_maxnorm",
        "table2_relu_2x8192_maxnorm", "table2_logistic_3x1024", "table2_baseline_nodropout",
        "mnist_cpu_budget", "mnist_cpu_budget_nodropout",
    } <= names
    budget, baseline = load_preset("mnist_cpu_budget"), load_preset("mnist_cpu_budget_nodropout")
    assert budget.optim.epochs <= 40
    assert baseline.model.resolved_retain() == [1.0, 1.0, 1.0]
    # the baseline differs from the budget net by dropout alone
    budget.model.retain_input = budget.model.retain_hidden = 1.0
    assert budget.model == baseline.model and budget.optim == baseline.optim
