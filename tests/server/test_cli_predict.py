"""`dropnet predict`: .npy / .npz / .png inputs, table and JSON output, and one error line (exit 2) for each
kind of bad input file: missing, a directory or pipe, random bytes, object arrays, truncated or damaged files."""

from __future__ import annotations

import io
import json
import os
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dropnet.cli import main
from dropnet.core.errors import DataError
from dropnet.server.input_files import png_geometry, read_png
from dropnet.server.predictor import Predictor
from tests.hostile_files import OBJECTS, Unpickled

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


NPY = "a .npy array of input rows, as numpy.save writes"
NPZ = "a .npz archive holding an array 'x' (or a single array) of input rows, as numpy.savez writes"
PNG = "a grayscale .png image"


def _noise_png(size: int = 32) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(7).integers(0, 256, size=(size, size), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def _png_with_a_broken_chunk() -> bytes:
    """A PNG whose image data continues in a chunk with an invalid type: Pillow raises SyntaxError reading it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = zlib.compress(b"".join(b"\x00" + bytes(range(64)) for _ in range(64)))
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", pixels[:20]) + struct.pack(">I", 16) + b"\x01\x02\x03\x04"


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(out, "JPEG")
    return out.getvalue()


def _fifo(path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("named pipes are POSIX")
    os.mkfifo(path)


def _saved(array: np.ndarray, cut: int = 0) -> Callable[[Path], None]:
    """Writes ``array`` as numpy.save does (pickles allowed, for the hostile files), less its last ``cut`` bytes."""
    def write(path: Path) -> None:
        out = io.BytesIO()
        np.save(out, array, allow_pickle=True)
        path.write_bytes(out.getvalue()[: len(out.getvalue()) - cut])
    return write


def _saved_npz(cut: int = 0, **arrays: np.ndarray) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        out = io.BytesIO()
        np.savez(out, **arrays)
        path.write_bytes(out.getvalue()[: len(out.getvalue()) - cut])
    return write


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _objects(path: Path) -> None:
    """Object rows whose unpickling would create ``unpickled`` beside ``path``, saved as its suffix says."""
    rows = np.array([Unpickled(path.parent / "unpickled")] * 4, dtype=object)
    (_saved_npz(x=rows) if path.suffix == ".npz" else _saved(rows))(path)


RANDOM = np.random.default_rng(0).bytes(4096)
BAD_INPUTS = {
    # name: (file name, how to make it (None: nothing), the one error line given the path)
    "missing": ("missing.npy", None, lambda p: f"{p}: file not found; expected {NPY}"),
    "directory": ("inputs", Path.mkdir, lambda p: f"{p} is a directory; expected a .npy array, a .npz archive "
                                                  "(array 'x' or a single array) or a grayscale .png image"),
    "directory-npz": ("x.npz", Path.mkdir, lambda p: f"{p} is a directory; expected {NPZ}"),
    "named-pipe": ("x.npy", _fifo, lambda p: f"{p} is a named pipe (FIFO); expected {NPY}"),
    "random-npy": ("x.npy", _bytes(RANDOM), lambda p: f"{p}: not a .npy array (its 4096 bytes do not start with the "
                                                      f".npy magic string b'\\x93NUMPY'); expected {NPY}"),
    "random-npz": ("x.npz", _bytes(RANDOM), lambda p: f"{p}: not a .npz archive (its 4096 bytes do not start like a "
                                                      f"zip archive); expected {NPZ}"),
    "random-png": ("x.png", _bytes(RANDOM), lambda p: f"{p}: not a PNG image (its 4096 bytes do not start with the "
                                                      f"PNG signature); expected {PNG}"),
    "jpeg-as-png": ("x.png", _bytes(_jpeg()), lambda p: f"{p}: not a PNG image (its {len(_jpeg())} bytes do not start "
                                                        f"with the PNG signature); expected {PNG}"),
    "object-npy": ("x.npy", _objects, lambda p: f"{p}: the .npy array holds Python objects (dtype object); {OBJECTS}"),
    "object-npz": ("x.npz", _objects, lambda p: f"{p}: array x.npy holds Python objects (dtype object); {OBJECTS}"),
    "truncated-npy": ("x.npy", _saved(np.ones((2, 1, 8, 8), np.float32), cut=100),
                      lambda p: f"{p}: the .npy array is truncated: its header declares shape (2, 1, 8, 8) of float32 "
                                f"(512 bytes of data) but 412 bytes follow; expected {NPY}"),
    "truncated-npz": ("x.npz", _saved_npz(cut=30, x=np.ones((2, 1, 8, 8), np.float32)),
                      lambda p: f"{p}: not a readable .npz archive (File is not a zip file: truncated or damaged); "
                                f"expected {NPZ}"),
    "truncated-png": ("x.png", _bytes(_noise_png()[:600]),
                      lambda p: f"{p} is a damaged or truncated PNG image (image file is truncated); expected {PNG}"),
    "broken-png": ("x.png", _bytes(_png_with_a_broken_chunk()),
                   lambda p: f"{p} is a damaged or truncated PNG image (broken PNG file "
                             f"(chunk b'\\x01\\x02\\x03\\x04')); expected {PNG}"),
    "suffix": ("x.csv", _bytes(b"1,2,3"),
               lambda p: f"input file {p} has suffix '.csv'; expected one of ['.npy', '.npz', '.png']"),
    "wrong-shape": ("x.npy", _saved(np.zeros((2, 63))),
                    lambda p: "x has shape (2, 63); expected (batch, 1, 8, 8) or (1, 8, 8)"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_inputs_exit_2_with_one_line_naming_the_file_and_what_was_expected(
    tiny_package: Path, tmp_path: Path, capsys: Capsys, case: str
) -> None:
    file_name, make, message = BAD_INPUTS[case]
    path = tmp_path / file_name
    if make is not None:
        make(path)
    assert main(["predict", str(tiny_package), "--input", str(path)]) == 2
    assert capsys.readouterr().err == f"dropnet predict: error: {message(path)}\n"
    assert not (tmp_path / "unpickled").exists()


def test_an_object_array_beside_x_is_never_unpickled(
    tiny_package: Path, predictor: Predictor, tmp_path: Path, capsys: Capsys
) -> None:
    marker = tmp_path / "unpickled"
    x = _rows(2)
    _saved_npz(x=x, meta=np.array([Unpickled(marker)], dtype=object))(tmp_path / "x.npz")
    _assert_matches(_predict_json(capsys, str(tiny_package), "--input", str(tmp_path / "x.npz")), predictor, x)
    assert not marker.exists()


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
    path = tmp_path / "bomb.png"
    with pytest.raises(DataError, match=r"bomb\.png: image too large to read safely .*expected a small grayscale image"):
        read_png(path.read_bytes(), path, (1, 8, 8), (0.0, 16.0))
