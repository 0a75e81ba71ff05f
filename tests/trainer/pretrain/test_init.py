"""``dropnet train --init``: pretrained layers scaled by 1/p keep each unit's expected input, and bad input is refused.

The property (docs/pretraining.md): with paper-flavour dropout the fine-tuning network's hidden layer k
sees m ⊙ a, m ~ Bernoulli(p), and its weights are W/p, so averaged over masks its pre-activation is
the pretrained W·a + c, layer by layer (a: the pretrained stack's own activations of the layer below).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from dropnet.cli import main
from dropnet.core.errors import ConfigError, RunDirError
from dropnet.trainer.config import DataConfig, ModelConfig, TrainConfig
from dropnet.trainer.data import load_dataset
from dropnet.trainer.dropout import Dropout
from dropnet.trainer.loop import train
from dropnet.trainer.models import build_model
from dropnet.trainer.pretrain.config import PretrainConfig
from dropnet.trainer.pretrain.greedy import pretrain
from dropnet.trainer.pretrain.init import apply_pretrained
from dropnet.trainer.pretrain.stack import load_stack
from tests.factories import DIGITS_SPEC

HIDDEN = [24, 12]
MASKS = 4000
"""Dropout masks averaged per example in the Monte-Carlo check."""


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64-24-12 RBM stack pretrained on digits for 2 epochs per layer (treat as read-only)."""
    run_dir = tmp_path_factory.mktemp("pretrained") / "rbm"
    config = PretrainConfig.from_dict({"pretrain": {"hidden": HIDDEN, "epochs": 2}, "device": "cpu"})
    pretrain(config, run_dir, dataset=load_dataset(DataConfig(name="digits"), seed=0))
    return run_dir


def _model(flavour: str = "paper", **changes: object) -> nn.Sequential:
    torch.manual_seed(0)
    config = ModelConfig(hidden=HIDDEN, activation="sigmoid", retain_input=0.8, retain_hidden=0.5, flavour=flavour,
                         max_norm=None, **changes)
    return build_model(config, DIGITS_SPEC)


def _examples(n: int = 8) -> torch.Tensor:
    low, high = DIGITS_SPEC.value_range
    return torch.rand(n, *DIGITS_SPEC.shape, generator=torch.Generator().manual_seed(1)) * (high - low) + low


def _blocks(model: nn.Sequential) -> list[tuple[Dropout, nn.Linear]]:
    """(dropout on the input, Linear) of each hidden layer."""
    modules = list(model)
    return [(modules[i - 1], m) for i, m in enumerate(modules) if isinstance(m, nn.Linear)][:-1]


@pytest.mark.parametrize("flavour", ["paper", "inverted"])
def test_expected_pre_activations_equal_the_pretrained_ones_layer_by_layer(pretrained: Path, flavour: str) -> None:
    model = _model(flavour)
    record = apply_pretrained(model, pretrained)
    stack = load_stack(pretrained)
    x = _examples()
    activations = stack.activations(x)
    inputs = [model[1](model[0](x))] + activations[:-1]  # what each hidden layer's dropout site receives
    below = [stack.visible(x)] + activations[:-1]  # what each pretrained layer received
    with torch.no_grad():
        for k, ((dropout, linear), layer) in enumerate(zip(_blocks(model), stack.layers)):
            pretrained_pre = below[k] @ layer.weight.T + layer.hidden_bias
            dropout.train()
            repeated = inputs[k].repeat(MASKS, 1)
            samples = linear(dropout(repeated)).reshape(MASKS, len(x), -1).double()
            # each unit's pre-activation over masks: a sum of independent terms W_ji·m_i·a_i (+ bias)
            p = dropout.retain
            gain = 1.0 if flavour == "paper" else 1.0 / p
            variance = (linear.weight.double() ** 2) @ (inputs[k].double().T ** 2) * p * (1 - p) * gain**2
            standard_error = (variance.T / MASKS).sqrt()
            assert ((samples.mean(dim=0) - pretrained_pre.double()).abs() <= 5 * standard_error + 1e-5).all()
            # the expectation itself, exactly: E[m] = p (paper) or 1 (inverted)
            expected = linear(inputs[k] * (p if flavour == "paper" else 1.0))
            torch.testing.assert_close(expected, pretrained_pre, rtol=1e-4, atol=1e-4)
    scales = [entry["weight_scale"] for entry in record["layers"]]
    assert scales == ([1 / 0.8, 1 / 0.5] if flavour == "paper" else [1.0, 1.0])


def test_the_test_time_network_computes_the_pretrained_up_pass(pretrained: Path) -> None:
    model = _model().eval()
    apply_pretrained(model, pretrained)
    x = _examples()
    hidden = [m for m in model if isinstance(m, nn.Sigmoid)]
    seen = []
    hooks = [h.register_forward_hook(lambda _m, _i, out: seen.append(out)) for h in hidden]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    for mine, theirs in zip(seen, load_stack(pretrained).activations(x)):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


def test_the_output_layer_keeps_its_random_initialisation(pretrained: Path) -> None:
    model, fresh = _model(), _model()
    apply_pretrained(model, pretrained)
    assert torch.equal(model[-1].weight, fresh[-1].weight) and torch.equal(model[-1].bias, fresh[-1].bias)
    assert not torch.equal(model[3].weight, fresh[3].weight)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hidden": [24]}, r"hidden layers \[24\] \(model.hidden\) do not match the 2 pretrained layers \[24, 12\]"),
        ({"hidden": [24, 16]}, r"expected model.hidden \[24, 12\]"),
        ({"activation": "relu"}, "expected model.activation sigmoid"),
        ({"batch_norm": True}, "--no-batch-norm"),
        ({"arch": "conv", "conv_channels": [4]}, "use --arch mlp"),
    ],
)
def test_a_network_that_does_not_fit_the_pretraining_is_refused_by_name(
    pretrained: Path, changes: dict, message: str,
) -> None:
    config = {"hidden": HIDDEN, "activation": "sigmoid", "max_norm": None, **changes}
    torch.manual_seed(0)
    model = build_model(ModelConfig(**config), DIGITS_SPEC)
    with pytest.raises(ConfigError, match=message):
        apply_pretrained(model, pretrained)


def test_other_data_is_refused(pretrained: Path) -> None:
    spec = DIGITS_SPEC.__class__(**{**DIGITS_SPEC.__dict__, "shape": (1, 28, 28)})
    model = build_model(ModelConfig(hidden=HIDDEN, activation="sigmoid"), spec)
    with pytest.raises(ConfigError, match="input has 784 features but .* was pretrained on 64"):
        apply_pretrained(model, pretrained)


def test_a_directory_that_is_no_pretraining_run_is_refused(tiny_run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="is a training run directory \\(dropnet train\\), not a pretraining run"):
        apply_pretrained(_model(), tiny_run_dir)
    with pytest.raises(RunDirError, match="is not a pretraining run directory .* it does not exist"):
        apply_pretrained(_model(), tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="it has no config.json"):
        apply_pretrained(_model(), tmp_path / "empty")


def test_a_pretraining_run_with_a_damaged_layer_file_is_refused(pretrained: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(pretrained, broken)
    (broken / "layer-2.safetensors").write_bytes(b"not a tensors file")
    with pytest.raises(RunDirError, match="layer-2.safetensors: not a readable safetensors file"):
        apply_pretrained(_model(), broken)


def _train_config(init: Path, epochs: int) -> TrainConfig:
    return TrainConfig.from_dict({
        "model": {"hidden": HIDDEN, "activation": "sigmoid", "max_norm": None},
        "optim": {"epochs": epochs, "lr": 0.5}, "device": "cpu", "init": str(init),
    })


def test_train_records_the_init_and_a_resumed_run_does_not_apply_it_again(
    digits, pretrained: Path, tmp_path: Path,
) -> None:
    source = tmp_path / "pretrained"
    shutil.copytree(pretrained, source)
    straight = train(_train_config(source, 3), tmp_path / "straight", dataset=digits)
    train(_train_config(source, 2), tmp_path / "resumed", dataset=digits)
    raw = json.loads((tmp_path / "resumed" / "config.json").read_text())
    assert raw["config"]["init"] == str(source)
    assert raw["init"]["run"] == str(source.resolve()) and raw["init"]["kind"] == "rbm"
    assert [(e["module"], e["weight_scale"], e["dropout_site"]) for e in raw["init"]["layers"]] == [
        ("3", 1.25, {"retain": 0.8, "flavour": "paper"}), ("6", 2.0, {"retain": 0.5, "flavour": "paper"}),
    ]
    digest = hashlib.sha256((source / "layer-1.safetensors").read_bytes()).hexdigest()
    assert raw["init"]["layers"][0]["sha256"] == digest
    shutil.rmtree(source)  # the resumed run continues from its checkpoint: the pretraining run is not read again
    resumed = train(_train_config(source, 3), tmp_path / "resumed", resume=True, dataset=digits)
    assert {k: v for k, v in resumed.items() if k != "seconds"} == {k: v for k, v in straight.items() if k != "seconds"}


def test_dropnet_train_refuses_a_bad_init_up_front_in_one_line(tiny_run_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["train", "--data", "digits", "--hidden", "24,12", "--activation", "sigmoid", "--device", "cpu"]
    assert main([*argv, "--init", str(tiny_run_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("dropnet train: error: ") and "is a training run directory" in err[-1]
    assert not out.exists()
