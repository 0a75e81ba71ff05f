"""`dropnet predict`: .npy / .npz / .png inputs, table and JSON output, errors without tracebacks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dropnet.cli import main
from dropnet.core.errors import DataError
from dropnet.server.input_files import png_geometry, read_png
from dropnet.server.predictor import Predictor

Capsys = pytest.CaptureFixture[str]


@pytest.fixture(scope="module")
def predictor(tiny_package: Path) -> Predictor:
    return Predictor.load(tiny_package)


def _rows(n: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 16.0, size=(n, 1, 8, 8)).astype(np.float32)


def _predict_json(capsys: Capsys, *argv: str) -> dict:
    assert main(["predict", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _assert_matches(result: dict, predictor: Predictor, x: np.ndarray, **kwargs: object) -> None:
    expected = predictor.predict(x, **kwargs)
    assert [r["predicted_class"] for r in result["rows"]] == expected.predicted_class.tolist()
    assert [r["label"] for r in result["rows"]] == expected.labels
    np.testing.assert_allclose([r["probabilities"] for r in result["rows"]], expected.probabilities, atol=1e-7)
    np.testing.assert_allclose(
        [r["confidence"] for r in result["rows"]], expected.probabilities.max(axis=1), atol=1e-7
    )


def test_npy_input_deterministic_json(
    tiny_package: Path, predictor: Predictor, tmp_path: Path, capsys: Capsys
) -> None:
    x = _rows(3)
    np.save(tmp_path / "x.npy", x)
    result = _predict_json(capsys, str(tiny_package), "--input", str(tmp_path / "x.npy"))
    assert (result["model"], result["version"], result["provider"]) == ("tiny-digits", "1", "CPUExecutionProvider")
    assert (result["method"], result["mc_samples"], result["seed"]) == ("deterministic", None, None)
    assert [r["row"] for r in result["rows"]] == [0, 1, 2]
    assert "std" not in result["rows"][0]
    _assert_matches(result, predictor, x)


def test_npz_input_with_x_or_a_single_array(
    tiny_package: Path, predictor: Predictor, tmp_path: Path, capsys: Capsys
) -> None:
    x, other = _rows(2, seed=4), _rows(1, seed=5)
    np.savez(tmp_path / "named.npz", x=x, other=other)
    _assert_matches(_predict_json(capsys, str(tiny_package), "--input", str(tmp_path / "named.npz")), predictor, x)
    np.savez(tmp_path / "single.npz", images=other)
    _assert_matches(_predict_json(capsys, str(tiny_package), "--input", str(tmp_path / "single.npz")), predictor, other)
    np.savez(tmp_path / "two.npz", a=x, b=other)
    assert main(["predict", str(tiny_package), "--input", str(tmp_path / "two.npz")]) == 2
    assert "holds arrays ['a', 'b']; expected one named 'x' or a single array" in capsys.readouterr().err


def test_png_is_resized_and_mapped_onto_the_value_range(
    tiny_package: Path, predictor: Predictor, tmp_path: Path, capsys: Capsys
) -> None:
    pixels = np.random.default_rng(6).integers(0, 256, size=(8, 8), dtype=np.uint8)
    # A 16×16 image of 2×2 blocks: box-downsampling to the model's 8×8 gives back ``pixels`` exactly.
    Image.fromarray(np.kron(pixels, np.ones((2, 2), np.uint8))).save(tmp_path / "big.png")
    Image.fromarray(pixels).convert("RGB").save(tmp_path / "exact.png")
    expected_x = (pixels.astype(np.float32) / 255.0 * 16.0).reshape(1, 1, 8, 8)
    for name in ("big.png", "exact.png"):
        result = _predict_json(capsys, str(tiny_package), "--input", str(tmp_path / name))
        _assert_matches(result, predictor, expected_x)


def test_mc_json_reports_seed_and_uncertainties(
    tiny_package: Path, predictor: Predictor, tmp_path: Path, capsys: Capsys
) -> None:
    x = _rows(4)
    np.save(tmp_path / "x.npy", x)
    argv = [str(tiny_package), "--input", str(tmp_path / "x.npy"), "--mc-samples", "20", "--seed", "9"]
    result = _predict_json(capsys, *argv)
    assert (result["method"], result["mc_samples"], result["seed"]) == ("mc", 20, 9)
    _assert_matches(result, predictor, x, mc_samples=20, seed=9)
    expected = predictor.predict(x, mc_samples=20, seed=9)
    np.testing.assert_allclose([r["std"] for r in result["rows"]], expected.std, atol=1e-7)
    for key in ("predictive_entropy", "mutual_information"):
        np.testing.assert_allclose([r[key] for r in result["rows"]], getattr(expected, key), atol=1e-7)


def test_table_output(
    tiny_package: Path, predictor: Predictor, tmp_path: Path, capsys: Capsys
) -> None:
    x = _rows(2)
    np.save(tmp_path / "x.npy", x)
    argv = ["predict", str(tiny_package), "--input", str(tmp_path / "x.npy"), "--mc-samples", "10", "--seed", "1"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = predictor.predict(x, mc_samples=10, seed=1)
    assert lines[0] == "model tiny-digits v1 on CPUExecutionProvider: MC dropout, T=10, seed=1"
    assert lines[1].split() == ["row", "label", "confidence", "std", "entropy", "mutual_info"]
    for row, line in enumerate(lines[2:]):
        cells = line.split()
        label = expected.predicted_class[row]
        assert cells[:3] == [str(row), expected.labels[row], f"{expected.probabilities[row, label]:.4f}"]
        assert cells[3:] == [
            f"{expected.std[row, label]:.4f}",
            f"{expected.predictive_entropy[row]:.4f}",
            f"{expected.mutual_information[row]:.4f}",
        ]
    assert len(lines) == 4


@pytest.mark.parametrize(
    ("file_name", "content", "message"),
    [
        ("missing.npy", None, "input file .*missing.npy does not exist"),
        ("x.npy", np.zeros((2, 63)), r"x has shape \(2, 63\); expected \(batch, 1, 8, 8\) or \(1, 8, 8\)"),
        ("x.csv", b"1,2,3", r"has suffix '\.csv'; expected one of \['\.npy', '\.npz', '\.png'\]"),
        ("x.npy", b"garbage", r"not a readable \.npy array"),
    ],
    ids=["missing", "wrong-shape", "suffix", "corrupt"],
)
def test_bad_inputs_exit_2_with_a_message(
    tiny_package: Path, tmp_path: Path, capsys: Capsys,
    file_name: str, content: object, message: str,
) -> None:
    path = tmp_path / file_name
    if isinstance(content, np.ndarray):
        np.save(path, content)
    elif content is not None:
        path.write_bytes(content)
    assert main(["predict", str(tiny_package), "--input", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dropnet predict: error: ") and "Traceback" not in err
    assert re.search(message, err)


@pytest.mark.parametrize(
    ("shape", "geometry"),
    [((1, 28, 28), (28, 28)), ((8, 6), (8, 6)), ((784,), (28, 28)), ((3, 8, 8), None), ((10,), None)],
)
def test_png_geometry_follows_the_model_input(shape: tuple[int, ...], geometry: tuple[int, int] | None) -> None:
    if geometry is None:
        with pytest.raises(DataError, match=rf"this model takes {re.escape(str(shape))}"):
            png_geometry(shape)
    else:
        assert png_geometry(shape) == geometry


def test_a_decompression_bomb_png_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 256 pixels: over twice the limit, Pillow refuses
    with pytest.raises(DataError, match=r"bomb\.png: image too large to read safely .*expected a small grayscale image"):
        read_png(tmp_path / "bomb.png", (1, 8, 8), (0.0, 16.0))
