"""``dropnet export --module`` (and the flags it shares with --onnx): packages written, bad input refused in one line.

The factories live in a file written into a temporary directory that becomes the working
directory, as a user's would.
"""

from __future__ import annotations

import hashlib
import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import save_file

from dropnet.cli import main
from dropnet.exporter.onnx_graph import IR_VERSION, OPSET

MODELS = "export_cli_models"
"""Module name of the factories' file (unique, as imports are cached per process)."""
FACTORIES = textwrap.dedent(
    """
    import torch
    from torch import nn


    def cnn():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.2), nn.Flatten(),
                             nn.Linear(4 * 6 * 6, 3))


    def text():
        torch.manual_seed(1)
        return nn.Sequential(nn.Embedding(30, 4), nn.Flatten(), nn.Dropout(0.1), nn.Linear(4 * 5, 2))


    def plain():
        return nn.Sequential(nn.Linear(4, 2))


    class Branching(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 2)
            self.dropout = nn.Dropout(0.5)

        def forward(self, x):
            h = self.dropout(self.layer(x))
            return h * 2 if h.sum() > 0 else h


    def failing():
        raise ValueError("no such checkpoint")


    not_callable = 3


    def not_a_module():
        return "cnn"
    """
)


def _onnx_model(dropout: bool = True) -> onnx.ModelProto:
    """Another framework's file: x [N, 4] → MatMul → Relu → Dropout (ratio 0.3) → MatMul → y [N, 3]."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
        for name, shape in (("w1", (4, 8)), ("w2", (8, 3)))
    ]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"])]
    if dropout:
        weights.append(numpy_helper.from_array(np.array(0.3, np.float32), "ratio"))
        nodes.append(helper.make_node("Dropout", ["r", "ratio"], ["d"], name="drop"))
    else:
        nodes.append(helper.make_node("Identity", ["r"], ["d"]))
    nodes.append(helper.make_node("MatMul", ["d", "w2"], ["y"]))
    graph = helper.make_graph(
        nodes, "framework_net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], initializer=weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The working directory: the factories, their weights (safetensors and .pt), labels, and odd files."""
    root = tmp_path_factory.mktemp("cli-models")
    (root / f"{MODELS}.py").write_text(FACTORIES)
    (root / "broken_factories.py").write_text("import not_an_installed_module\n")
    torch.manual_seed(9)
    from torch import nn

    weights = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Dropout2d(0.2), nn.Flatten(),
                            nn.Linear(4 * 6 * 6, 3)).state_dict()
    save_file(weights, str(root / "cnn.safetensors"))
    torch.save(weights, root / "cnn.pt")
    torch.save({**weights, **{f"extra.{i}": torch.zeros(1) for i in range(10)}}, root / "extra.pt")
    torch.save({k: v for k, v in weights.items() if not k.startswith("4.")}, root / "missing.pt")
    torch.save({**weights, "0.weight": torch.zeros(4, 3, 5, 5)}, root / "misshapen.pt")
    torch.save([torch.zeros(1)], root / "list.pt")
    (root / "garbage.safetensors").write_bytes(b"not safetensors at all")
    onnx.save(_onnx_model(), root / "net.onnx")
    onnx.save(_onnx_model(dropout=False), root / "plain.onnx")
    (root / "labels.txt").write_text("cat\ndog\nbird\n")
    (root / "two-labels.txt").write_text("cat\ndog\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        yield root


def _export(*args: str) -> int:
    return main(["export", *args])


def _manifest(package: Path) -> dict:
    return json.loads((package / "manifest.json").read_text())


@pytest.fixture(scope="module")
def cnn_package(workdir: Path) -> Path:
    code = _export(f"--module={MODELS}:cnn", "--weights", "cnn.safetensors", "--input-shape", "3,6,6",
                   "--classes", "labels.txt", "--out", "packages/cnn", "--version", "2")
    assert code == 0
    return workdir / "packages" / "cnn"


def test_module_with_safetensors_weights(cnn_package: Path, workdir: Path) -> None:
    raw = _manifest(cnn_package)
    assert (raw["name"], raw["version"], raw["task"]) == ("cnn", "2", "classification")
    assert raw["classes"] == ["cat", "dog", "bird"]
    assert raw["input"]["shape"] == [3, 6, 6] and raw["input"]["dtype"] == "float32"
    assert raw["dropout"]["sites"] == [{"path": "2", "kind": "inverted", "retain": 0.8, "granularity": "channel"}]
    made = raw["source_run"]
    assert made["factory"] == f"{MODELS}:cnn"
    digest = hashlib.sha256((workdir / "cnn.safetensors").read_bytes()).hexdigest()
    assert made["weights"] == {"file": "cnn.safetensors", "sha256": digest}
    assert made["example_input"] == {"rows": 4, "seed": 0}


def test_state_dict_weights_give_the_same_graphs(cnn_package: Path, workdir: Path) -> None:
    from dropnet.exporter.own.factory import load_module

    from_safetensors, _ = load_module(f"{MODELS}:cnn", Path("cnn.safetensors"))
    from_pt, made = load_module(f"{MODELS}:cnn", Path("cnn.pt"))
    assert made["weights"]["file"] == "cnn.pt" and not from_pt.training
    for key, value in from_safetensors.state_dict().items():
        assert torch.equal(value, from_pt.state_dict()[key])


def test_int64_regression_with_targets(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = workdir / "packages" / "text"
    assert _export("--module", f"{MODELS}:text", "--input-shape", "5", "--input-dtype", "int64",
                   "--value-range", "0,29", "--regression", "--targets", "score,spread", "--out", str(out),
                   "--name", "text-reg") == 0
    assert capsys.readouterr().out.strip() == f"wrote model package {out}"
    raw = _manifest(out)
    assert (raw["name"], raw["task"], raw["targets"]) == ("text-reg", "regression", ["score", "spread"])
    assert raw["input"] == {"name": "x", "shape": [5], "dtype": "int64", "value_range": [0, 29]}


def test_onnx_file(workdir: Path) -> None:
    out = workdir / "packages" / "onnx"
    assert _export("--onnx", "net.onnx", "--classes", "labels.txt", "--out", str(out), "--max-samples", "64") == 0
    raw = _manifest(out)
    assert (raw["name"], raw["task"], raw["classes"], raw["mc"]["max_samples"]) == ("onnx", "classification",
                                                                                    ["cat", "dog", "bird"], 64)
    assert raw["input"]["shape"] == [4] and raw["input"]["dtype"] == "float32"
    assert raw["dropout"]["sites"] == [{"path": "drop", "kind": "inverted", "retain": 0.7, "granularity": "element"}]
    digest = hashlib.sha256((workdir / "net.onnx").read_bytes()).hexdigest()
    assert raw["source_run"]["onnx"] == {"file": "net.onnx", "sha256": digest}


def test_onnx_api_regression_serves(workdir: Path) -> None:
    import dropnet

    out = dropnet.export_onnx(workdir / "net.onnx", workdir / "packages" / "onnx-reg", name="reg", task="regression")
    assert _manifest(out)["targets"] == ["y0", "y1", "y2"]
    predictor = dropnet.Predictor.load(out, device="cpu")
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    mc = predictor.predict(x, mc_samples=10, seed=3)
    assert mc.mean.shape == mc.std.shape == (2, 3)


def _cnn(*extra: str) -> list[str]:
    return [f"--module={MODELS}:cnn", "--input-shape", "3,6,6", "--classes", "labels.txt", *extra]


REFUSED: dict[str, tuple[list[str], str]] = {
    "no source": (
        ["--classes", "labels.txt"], "export got nothing to export; expected one of RUN_DIR, --module, --onnx"
    ),
    "two sources": (
        ["run", f"--module={MODELS}:cnn"], "export got RUN_DIR and --module to export; expected one of"
    ),
    "module flags with a run dir": (
        ["run", "--weights", "cnn.pt"], "--weights cannot be used with RUN_DIR; expected them only with --module or"
    ),
    "module flags with onnx": (
        ["--onnx", "m.onnx", "--input-shape", "3", "--regression"],
        "--input-shape cannot be used with --onnx; expected them only with --module",
    ),
    "classes and regression": (
        _cnn("--regression"), "export got both --classes and --regression; expected --classes LABELS_FILE"
    ),
    "neither classes nor regression": (
        [f"--module={MODELS}:cnn", "--input-shape", "3,6,6"], "export got neither --classes nor --regression"
    ),
    "targets without regression": (_cnn("--targets", "a"), "--targets names regression targets"),
    "no input shape": ([f"--module={MODELS}:cnn", "--regression"], "--module needs --input-shape"),
    "bad input shape": (
        [f"--module={MODELS}:cnn", "--input-shape", "3,x", "--regression"],
        "--input-shape '3,x' is invalid; expected comma-separated numbers",
    ),
    "fractional input shape": (
        [f"--module={MODELS}:cnn", "--input-shape", "3,6.5", "--regression"],
        "--input-shape '3,6.5' is invalid; expected positive integers",
    ),
    "bad value range": (_cnn("--value-range", "1"), "--value-range '1' is invalid; expected 2 comma-separated numbers"),
    "missing labels file": (
        [f"--module={MODELS}:cnn", "--input-shape", "3,6,6", "--classes", "nope.txt"],
        "--classes nope.txt cannot be read",
    ),
    "factory without colon": (
        ["--module", MODELS, "--input-shape", "3", "--regression"], f"factory '{MODELS}' is not MODULE:CALLABLE"
    ),
    "module not found": (
        ["--module", "no_such_models:build", "--input-shape", "3", "--regression"],
        "factory no_such_models:build: cannot import no_such_models (ModuleNotFoundError: No module named "
        "'no_such_models'); expected a module importable from",
    ),
    "import fails inside": (
        ["--module", "broken_factories:build", "--input-shape", "3", "--regression"],
        "cannot import broken_factories (ModuleNotFoundError: No module named 'not_an_installed_module')",
    ),
    "no such factory": (
        ["--module", f"{MODELS}:missing", "--input-shape", "3", "--regression"],
        f"factory {MODELS}:missing: {MODELS} has no attribute missing; expected a callable",
    ),
    "not callable": (
        ["--module", f"{MODELS}:not_callable", "--input-shape", "3", "--regression"],
        f"factory {MODELS}:not_callable is a int, not callable",
    ),
    "factory raises": (
        ["--module", f"{MODELS}:failing", "--input-shape", "3", "--regression"],
        f"factory {MODELS}:failing raised ValueError: no such checkpoint",
    ),
    "not a module": (
        ["--module", f"{MODELS}:not_a_module", "--input-shape", "3", "--regression"],
        f"factory {MODELS}:not_a_module returned a str; expected a torch.nn.Module",
    ),
    "unexpected keys": (
        _cnn("--weights", "extra.pt"),
        "weights file extra.pt does not fit Sequential: unexpected keys [extra.0, extra.1, extra.2, extra.3, extra.4, "
        "extra.5, extra.6, extra.7, … (2 more)]; expected the module's state_dict keys and shapes",
    ),
    "missing keys": (
        _cnn("--weights", "missing.pt"), "does not fit Sequential: missing keys [4.weight, 4.bias]; expected"
    ),
    "misshapen weights": (
        _cnn("--weights", "misshapen.pt"), "0.weight is [4, 3, 5, 5] but the module's is [4, 3, 3, 3]"
    ),
    "not a state dict": (
        _cnn("--weights", "list.pt"), "weights file list.pt holds a list, not a state dict; expected a state dict saved"
    ),
    "not safetensors": (
        _cnn("--weights", "garbage.safetensors"), "weights file garbage.safetensors: SafetensorError"
    ),
    "weights not found": (_cnn("--weights", "nope.pt"), "weights file nope.pt cannot be read (No such file"),
    "shape rejected": (
        [f"--module={MODELS}:cnn", "--input-shape", "3,7,7", "--classes", "labels.txt"],
        "Sequential rejects the example input torch.float32 [4, 3, 7, 7]: RuntimeError: mat1 and mat2 shapes cannot "
        "be multiplied",
    ),
    "dtype rejected": (
        [f"--module={MODELS}:cnn", "--input-shape", "3,6,6", "--input-dtype", "int64", "--value-range", "0,9",
         "--classes", "labels.txt"],
        "Sequential rejects the example input torch.int64 [4, 3, 6, 6]: RuntimeError:",
    ),
    "int64 without range": (
        [f"--module={MODELS}:cnn", "--input-shape", "3,6,6", "--input-dtype", "int64", "--classes", "labels.txt"],
        "an int64 input needs its value range (the valid token ids, e.g. --value-range 0,VOCABULARY-1)",
    ),
    "class count": (
        [f"--module={MODELS}:cnn", "--input-shape", "3,6,6", "--classes", "two-labels.txt"],
        "2 classes given but the model's output has 3 (C); expected one label per output",
    ),
    "no dropout": (
        ["--module", f"{MODELS}:plain", "--input-shape", "4", "--regression"],
        "Sequential has no active dropout site, so MC dropout has nothing to sample",
    ),
    "not exportable": (
        ["--module", f"{MODELS}:Branching", "--input-shape", "4", "--regression"],
        "torch.onnx cannot export Branching",
    ),
    "onnx without dropout": (["--onnx", "plain.onnx", "--regression"], "plain.onnx has no Dropout node"),
    "onnx class count": (
        ["--onnx", "net.onnx", "--classes", "two-labels.txt"], "2 classes given but the model's output has 3 (C)"
    ),
    "not an onnx file": (["--onnx", "labels.txt", "--regression"], "labels.txt is not an ONNX model"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_input_gets_one_line_and_nothing_written(
    case: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, message = REFUSED[case]
    before = set(os.listdir(workdir))
    assert _export(*args, "--out", "refused") == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("dropnet export: error: ")]
    assert len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in err
    assert set(os.listdir(workdir)) == before  # no package, no staging directory


def test_existing_package_needs_force(cnn_package: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _export(*_cnn("--out", str(cnn_package))) == 2
    assert "already holds a model package; pass --force to replace it" in capsys.readouterr().err
    assert _export(*_cnn("--out", str(cnn_package), "--name", "renamed", "--force")) == 0
    assert _manifest(cnn_package)["name"] == "renamed"
