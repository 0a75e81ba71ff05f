"""OOD sets from files: an IDX directory, a .npz and a folder of PNGs, each checked against the package's input."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dropnet.core.errors import DataError
from dropnet.core.manifest import InputSpec
from dropnet.quality.ood_sources import read_ood, read_ood_sets
from dropnet.trainer.data.idx import IMAGES_MAGIC

DIGITS = InputSpec("x", (1, 8, 8), "float32", (0.0, 16.0))


def _pixels(n: int, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size)).astype(np.uint8)


def _write_idx(path: Path, images: np.ndarray) -> Path:
    header = IMAGES_MAGIC.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in images.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(header + images.tobytes()))
    return path


def test_an_idx_directory_gives_its_images_on_the_input_scale(tmp_path: Path) -> None:
    images = _pixels(7)
    _write_idx(tmp_path / "fashion" / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "fashion" / "train-images-idx3-ubyte.gz", _pixels(3, seed=1))
    found = read_ood(tmp_path / "fashion", DIGITS)
    assert found.name == "fashion" and found.x.shape == (7, 1, 8, 8) and found.x.dtype == np.float32
    np.testing.assert_allclose(found.x[:, 0], images / 255 * 16, rtol=1e-6)
    assert found.source["format"] == "idx" and len(found.source["sha256"]) == 64
    assert "t10k-images-idx3-ubyte.gz" in found.description


def test_idx_files_that_do_not_fit_the_package_are_refused(tmp_path: Path) -> None:
    _write_idx(tmp_path / "big" / "t10k-images-idx3-ubyte.gz", _pixels(2, size=28))
    with pytest.raises(DataError, match=r"holds 28×28 images; the package takes inputs of shape \[1, 8, 8\]"):
        read_ood(tmp_path / "big", DIGITS)
    _write_idx(tmp_path / "two" / "a-images-idx3-ubyte.gz", _pixels(2))
    _write_idx(tmp_path / "two" / "b-images-idx3-ubyte.gz", _pixels(2))
    with pytest.raises(DataError, match=r"several IDX image files \['a-images-idx3-ubyte.gz', 'b-images.*expected one"):
        read_ood(tmp_path / "two", DIGITS)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="not a readable gzip file"):
        read_ood(tmp_path / "broken", DIGITS)
    labels = tmp_path / "labels" / "t10k-labels-idx1-ubyte.gz"
    labels.parent.mkdir()
    labels.write_bytes(gzip.compress((2049).to_bytes(4, "big") + (2).to_bytes(4, "big") + bytes(2)))
    with pytest.raises(DataError, match=r"holds no IDX image file \(\*idx3-ubyte.gz\) and no .png image"):
        read_ood(tmp_path / "labels", DIGITS)


def test_a_npz_gives_its_rows_as_they_are(tmp_path: Path) -> None:
    rows = np.random.default_rng(0).uniform(0, 16, (5, 1, 8, 8))
    np.savez(tmp_path / "noise.npz", x=rows, y=np.arange(5))
    found = read_ood(tmp_path / "noise.npz", DIGITS)
    assert found.name == "noise" and found.x.dtype == np.float32 and found.source["format"] == "npz"
    np.testing.assert_allclose(found.x, rows.astype(np.float32))
    np.savez(tmp_path / "only.npz", images=rows)
    assert read_ood(tmp_path / "only.npz", DIGITS).x.shape == (5, 1, 8, 8)


def test_array_files_that_do_not_fit_the_package_are_refused(tmp_path: Path) -> None:
    cases = {
        "flat.npz": (np.zeros((5, 64)), r"flat.npz holds an array of shape \[5, 64\]; expected rows .*\[N, 1, 8, 8\]"),
        "wide.npz": (np.zeros((5, 1, 8, 9)), r"x has shape \(5, 1, 8, 9\); expected \(batch, 1, 8, 8\)"),
        "bright.npz": (np.full((2, 1, 8, 8), 255.0), r"values in \[255, 255\]; expected values within .*\[0, 16\]"),
        "nan.npz": (np.full((2, 1, 8, 8), np.nan), r"nan.npz: x holds 128 non-finite value"),
        "text.npz": (np.full((2, 1, 8, 8), "a"), r"expected float or integer numbers"),
    }
    for name, (array, message) in cases.items():
        np.savez(tmp_path / name, x=array)
        with pytest.raises(DataError, match=message):
            read_ood(tmp_path / name, DIGITS)
    np.savez(tmp_path / "two.npz", a=np.zeros(3), b=np.zeros(3))
    with pytest.raises(DataError, match=r"holds arrays \['a', 'b'\]; expected one named 'x' or a single array"):
        read_ood(tmp_path / "two.npz", DIGITS)


def test_a_folder_of_pngs_gives_one_row_per_image_in_name_order(tmp_path: Path) -> None:
    folder = tmp_path / "drawn"
    folder.mkdir()
    images = _pixels(3)
    for i, image in enumerate(images):
        Image.fromarray(image, mode="L").save(folder / f"img{2 - i}.png")  # sorted order: img0 is images[2]
    found = read_ood(folder, DIGITS)
    assert found.name == "drawn" and found.x.shape == (3, 1, 8, 8) and found.source["format"] == "png"
    np.testing.assert_allclose(found.x[:, 0], images[::-1] / 255 * 16, rtol=1e-6)
    (folder / "img9.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"img9.png: not a PNG image"):
        read_ood(folder, DIGITS)


def test_paths_that_are_no_ood_set_are_refused_saying_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing.npz: file not found; expected a .npz archive"):
        read_ood(tmp_path / "missing.npz", DIGITS)
    with pytest.raises(DataError, match=r"OOD set .*nowhere does not exist; expected a directory of gzipped IDX"):
        read_ood(tmp_path / "nowhere", DIGITS)
    (tmp_path / "table.csv").write_text("1,2\n")
    with pytest.raises(DataError, match=r"has suffix '.csv'; expected a directory of gzipped IDX"):
        read_ood(tmp_path / "table.csv", DIGITS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no IDX image file"):
        read_ood(tmp_path / "empty", DIGITS)
    mixed = tmp_path / "mixed"
    _write_idx(mixed / "t10k-images-idx3-ubyte.gz", _pixels(2))
    Image.fromarray(_pixels(1)[0], mode="L").save(mixed / "a.png")
    with pytest.raises(DataError, match="holds both IDX files and .png images"):
        read_ood(mixed, DIGITS)


def test_sets_are_named_by_stem_without_clashes(tmp_path: Path) -> None:
    rows = np.zeros((2, 1, 8, 8))
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        np.savez(tmp_path / folder / "blank.npz", x=rows)
    np.savez(tmp_path / "invert.npz", x=rows)
    sets = read_ood_sets([tmp_path / "a" / "blank.npz", tmp_path / "b" / "blank.npz", tmp_path / "invert.npz"],
                         DIGITS, taken=["invert"])
    assert [s.name for s in sets] == ["blank", "blank-2", "invert-2"]
