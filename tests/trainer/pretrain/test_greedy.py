"""Greedy layer-wise pretraining: the reconstruction error falls on real MNIST, the run directory, and resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dropnet.core.errors import ConfigError, RunDirError
from dropnet.trainer.config import DataConfig
from dropnet.trainer.data import Dataset, load_dataset
from dropnet.trainer.data.dataset import Split, make_dataset
from dropnet.trainer.pretrain import greedy
from dropnet.trainer.pretrain.config import PretrainConfig
from dropnet.trainer.pretrain.greedy import pretrain
from dropnet.trainer.pretrain.stack import load_stack

MNIST_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "mnist"
MNIST_EXAMPLES = 3000


@pytest.fixture(scope="module")
def mnist_subset() -> Dataset:
    """The first 3,000 MNIST training images (784 pixels, 0..255); a few val/test rows to fill the splits."""
    full = load_dataset(DataConfig(name="mnist", data_dir=str(MNIST_DIR)), seed=0)
    n = MNIST_EXAMPLES
    splits = (Split(full.train.x[:n], full.train.y[:n]), Split(full.val.x[:10], full.val.y[:10]),
              Split(full.test.x[:10], full.test.y[:10]))
    return make_dataset("mnist-3000", "the first 3,000 MNIST training images", splits, full.spec.value_range,
                        full.spec.class_labels)


def _config(**pretrain: object) -> PretrainConfig:
    return PretrainConfig.from_dict({"pretrain": {"hidden": [24, 12], "epochs": 3, **pretrain}, "device": "cpu"})


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _without_seconds(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


@pytest.mark.parametrize("kind", ["rbm", "dae"])
def test_reconstruction_error_falls_on_mnist(kind: str, mnist_subset: Dataset, tmp_path: Path) -> None:
    final = pretrain(_config(kind=kind, hidden=[64, 32], epochs=4), tmp_path / "run", dataset=mnist_subset)
    records = _records(tmp_path / "run")
    for layer in (1, 2):
        errors = [r["recon_error"] for r in records if r["layer"] == layer]
        assert len(errors) == 4 and all(a > b for a, b in zip(errors, errors[1:])), errors
        assert errors[-1] < 0.6 * errors[0]
    # layer 1 ends below the error of the best constant reconstruction (each pixel's mean): it learned structure
    pixels = mnist_subset.train.x.reshape(MNIST_EXAMPLES, -1) / 255.0
    assert final["layers"][0]["recon_error"] < 0.75 * float(pixels.var(axis=0).mean())


def test_run_directory_records_how_it_was_made(digits, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    final = pretrain(_config(), run_dir, dataset=digits)
    raw = json.loads((run_dir / "config.json").read_text())
    assert raw["format"] == "dropnet-pretrain/1"
    assert raw["config"] == _config().to_dict() and raw["config"]["seed"] == 0
    assert raw["dataset"]["train"] == len(digits.train) and set(raw["versions"]) >= {"dropnet", "torch", "numpy"}
    assert isinstance(raw["command"], list) and raw["created"]
    assert raw["layers"] == [
        {"layer": k, "kind": "rbm", "visible": v, "hidden": h, "visible_type": "bernoulli",
         "file": f"layer-{k}.safetensors"}
        for k, v, h in ((1, 64, 24), (2, 24, 12))
    ]
    assert raw["final_metrics"] == final
    assert [(r["layer"], r["epoch"]) for r in _records(run_dir)] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    stack = load_stack(run_dir)
    assert [tuple(layer.weight.shape) for layer in stack.layers] == [(24, 64), (12, 24)]
    # digits are non-negative: bernoulli visible units, pixels 0..16 scaled into [0, 1]
    assert stack.visible.scale.tolist() == [1 / 16] * 64 and stack.visible.shift.tolist() == [0.0] * 64


def test_the_same_seed_gives_the_same_layers_and_another_seed_does_not(digits, tmp_path: Path) -> None:
    pretrain(_config(), tmp_path / "a", dataset=digits)
    pretrain(_config(), tmp_path / "b", dataset=digits)
    other = _config()
    other.seed = 1
    pretrain(other, tmp_path / "c", dataset=digits)
    layer = "layer-2.safetensors"
    assert (tmp_path / "a" / layer).read_bytes() == (tmp_path / "b" / layer).read_bytes()
    assert (tmp_path / "a" / layer).read_bytes() != (tmp_path / "c" / layer).read_bytes()


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, commits: int, before_commit: bool = False) -> None:
    """Make the run stop (as if killed) after ``commits`` checkpoint commits, or just before the next one."""
    real = greedy.save_checkpoint
    done = []

    def save_then_stop(*args, **kwargs):
        if before_commit and len(done) == commits:
            raise KeyboardInterrupt
        real(*args, **kwargs)
        done.append(1)
        if not before_commit and len(done) == commits:
            raise KeyboardInterrupt

    monkeypatch.setattr(greedy, "save_checkpoint", save_then_stop)


@pytest.mark.parametrize(
    ("kind", "commits", "before_commit"),
    [
        ("rbm", 4, False),  # mid-stack, mid-layer: layer 2 after its first epoch
        ("rbm", 2, True),  # layer 1's file written, its last epoch not committed: that epoch is trained again
        ("dae", 3, False),  # layer 1 done and committed: layer 2 starts from the restored sampling stream
    ],
)
def test_resume_mid_pretraining_is_bit_identical_to_an_uninterrupted_run(
    digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, commits: int, before_commit: bool,
) -> None:
    config = _config(kind=kind)
    straight = pretrain(config, tmp_path / "straight", dataset=digits)
    _interrupt_after(monkeypatch, commits, before_commit)
    with pytest.raises(KeyboardInterrupt):
        pretrain(config, tmp_path / "resumed", dataset=digits)
    monkeypatch.undo()
    leftover = tmp_path / "resumed" / ".layer-2.safetensors.abcd1234.tmp"  # a write the kill cut short
    leftover.write_bytes(b"partial")
    resumed = pretrain(config, tmp_path / "resumed", resume=True, dataset=digits)
    assert not leftover.exists()
    for name in ("layer-1.safetensors", "layer-2.safetensors", "input.safetensors"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
    assert _without_seconds(_records(tmp_path / "resumed")) == _without_seconds(_records(tmp_path / "straight"))
    assert resumed["layers"] == straight["layers"]


def test_resume_with_a_different_config_or_data_is_refused(digits, tmp_path: Path) -> None:
    pretrain(_config(epochs=1), tmp_path / "run", dataset=digits)
    with pytest.raises(ConfigError, match=r"pretrain.lr: the run has 0.1, requested 0.05"):
        pretrain(_config(epochs=1, lr=0.05), tmp_path / "run", resume=True, dataset=digits)
    other = make_dataset("other", "", (digits.train, digits.val, digits.test), (0.0, 32.0), digits.spec.class_labels)
    with pytest.raises(RunDirError, match="resume with the same data"):
        pretrain(_config(epochs=1), tmp_path / "run", resume=True, dataset=other)


def test_a_new_run_into_a_non_empty_directory_is_refused(digits, tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="--resume"):
        pretrain(_config(), tmp_path / "run", dataset=digits)


def test_gaussian_visible_units_standardise_each_input(digits, tmp_path: Path) -> None:
    pretrain(_config(visible="gaussian", lr=0.005, epochs=1), tmp_path / "run", dataset=digits)
    stack = load_stack(tmp_path / "run")
    flat = digits.train.x.reshape(len(digits.train), -1).astype(np.float64)
    v = flat * stack.visible.scale.numpy() + stack.visible.shift.numpy()
    varying = flat.std(axis=0) > 0.1 * digits.spec.std  # inputs above the floor: mean 0, variance 1
    assert np.abs(v.mean(axis=0)).max() < 1e-5
    assert np.abs(v[:, varying].std(axis=0) - 1).max() < 1e-5
    assert stack.layers[0].visible_type == "gaussian" and stack.layers[1].visible_type == "bernoulli"


def test_an_unfinished_run_is_not_a_stack(digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_config(), tmp_path / "run", dataset=digits)
    with pytest.raises(RunDirError, match=r"has not finished .* dropnet pretrain --resume --out"):
        load_stack(tmp_path / "run")
    shutil.rmtree(tmp_path / "run")
