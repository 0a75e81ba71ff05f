"""What ``dropnet train`` and ``dropnet evaluate`` say about a data file that is not one they can use.

Each case runs the real command line (``dropnet.cli.main``) and checks the exit code, the one
error line and that nothing was written.
"""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dropnet.cli import main
from tests.hostile_files import Unpickled

TRAIN = ["train", "--hidden", "16", "--epochs", "1", "--lr", "0.5", "--device", "cpu"]


def _train(data: str, out: Path, *flags: str) -> int:
    return main([*TRAIN, "--data", data, "--out", str(out), *flags])


def _error(capsys: pytest.CaptureFixture, command: str = "train") -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "allow_pickle" not in err
    lines = [line for line in err.splitlines() if line.startswith(f"dropnet {command}: error: ")]
    assert len(lines) == 1, err
    return lines[0].removeprefix(f"dropnet {command}: error: ")


def _dataset(counts: list[int], features: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``counts[c]`` examples of class c, features drawn around the class id."""
    y = np.repeat(np.arange(len(counts)), counts)
    x = np.random.default_rng(seed).normal(size=(len(y), features)) + y[:, None]
    return x.astype(np.float32), y


# ---------------------------------------------------------------- paths that are not data files


@pytest.mark.parametrize("name", ["images", "images.npz", "images.csv"])
def test_a_directory_is_reported_as_a_directory_with_what_was_expected(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    directory = tmp_path / name
    directory.mkdir()
    assert _train(str(directory), tmp_path / "run") == 2
    message = _error(capsys)
    assert message.startswith(f"{directory} is a directory; expected ")
    assert "not found" not in message
    expected = {"images": "'digits', 'mnist' or a path to a .npz or .csv file",
                "images.npz": "a .npz archive with arrays x (examples) and y (labels)",
                "images.csv": "a numeric .csv file, one example per row with its label in the last column"}[name]
    assert expected in message
    assert not (tmp_path / "run").exists()


def test_mnist_data_dir_that_is_a_file_or_holds_a_directory_is_named(tmp_path: Path, capsys) -> None:
    afile = tmp_path / "mnist.gz"
    afile.write_bytes(b"x")
    assert _train("mnist", tmp_path / "run", "--data-dir", str(afile)) == 2
    assert _error(capsys).startswith(f"{afile} is not a directory; expected a directory holding the MNIST files [")

    directory = tmp_path / "mnist"
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (directory / name).mkdir(parents=True)
    assert _train("mnist", tmp_path / "run", "--data-dir", str(directory)) == 2
    assert _error(capsys) == (
        f"{directory / 'train-images-idx3-ubyte.gz'} is a directory; expected a gzipped IDX file of the MNIST distribution"
    )


def test_evaluate_reports_a_directory_passed_as_its_data(tiny_run_dir: Path, tmp_path: Path, capsys) -> None:
    directory = tmp_path / "held-out.csv"
    directory.mkdir()
    argv = ["evaluate", str(tiny_run_dir), "--data", str(directory), "--json-out", str(tmp_path / "e.json")]
    assert main(argv) == 2
    assert _error(capsys, "evaluate").startswith(f"{directory} is a directory; expected a numeric .csv file")
    assert not (tmp_path / "e.json").exists()


# ---------------------------------------------------------------- .npz files that are not what they claim


def test_random_bytes_named_npz_are_not_a_zip_archive(tmp_path: Path, capsys) -> None:
    path = tmp_path / "random.npz"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    assert _train(str(path), tmp_path / "run") == 2
    assert _error(capsys) == (
        f"{path}: not a .npz archive (its 4096 bytes do not start like a zip archive); expected a .npz archive "
        "with arrays x (examples) and y (labels), as numpy.savez(path, x=x, y=y) writes"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"PK\x03\x04" + bytes(range(256)) * 4, "File is not a zip file"),
        (b"PK\x05\x06" + bytes(18), "found []"),
    ],
)
def test_a_damaged_or_empty_zip_is_refused_in_one_line(content: bytes, reason: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "damaged.npz"
    path.write_bytes(content)
    assert _train(str(path), tmp_path / "run") == 2
    message = _error(capsys)
    assert message.startswith(f"{path}: ") and reason in message


def test_an_npz_whose_member_is_not_npy_data_is_refused(tmp_path: Path, capsys) -> None:
    path = tmp_path / "members.npz"
    x = io.BytesIO()
    np.save(x, np.ones((4, 2)))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", x.getvalue())
        archive.writestr("y.npy", b"\x93NUMPY\x01\x00" + b"\xff" * 40)  # a header that is not a dict
    assert _train(str(path), tmp_path / "run") == 2
    assert _error(capsys).startswith(f"{path}: not a readable .npz archive (")


def test_a_truncated_npz_or_member_is_named(tmp_path: Path, capsys) -> None:
    path = tmp_path / "cut.npz"
    np.savez(path, **dict(zip("xy", _dataset([5, 5]))))
    path.write_bytes(path.read_bytes()[:-40])  # the zip directory at the end is cut
    assert _train(str(path), tmp_path / "run") == 2
    assert _error(capsys) == (
        f"{path}: not a readable .npz archive (File is not a zip file: truncated or damaged); expected a .npz archive "
        "with arrays x (examples) and y (labels), as numpy.savez(path, x=x, y=y) writes"
    )
    x = io.BytesIO()
    np.save(x, np.ones((10, 3), np.float32))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", x.getvalue()[:-4])  # a member cut short, in an intact archive
        archive.writestr("y.npy", b"")
    assert _train(str(path), tmp_path / "run") == 2
    assert _error(capsys).startswith(
        f"{path}: array x.npy is truncated: its header declares shape (10, 3) of float32 (120 bytes of data) but 116 "
        "bytes follow; expected a .npz archive with arrays x"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("array", ["x", "y"])
def test_an_npz_holding_object_arrays_is_refused_without_unpickling(array: str, tmp_path: Path, capsys) -> None:
    marker = tmp_path / "unpickled"
    x, y = _dataset([5, 5])
    arrays = {"x": x, "y": y, array: np.array([Unpickled(marker)] * 10, dtype=object)}
    path = tmp_path / "objects.npz"
    np.savez(path, **arrays)
    assert _train(str(path), tmp_path / "run") == 2
    assert _error(capsys) == (
        f"{path}: array {array}.npy holds Python objects (dtype object); expected numeric arrays (object arrays are "
        "refused: loading them would unpickle, i.e. run, code from the file)"
    )
    assert not marker.exists()


def test_a_single_npy_array_named_npz_says_so(tmp_path: Path, capsys) -> None:
    path = tmp_path / "single.npz"
    with path.open("wb") as f:
        np.save(f, np.ones((4, 2)))
    assert _train(str(path), tmp_path / "run") == 2
    assert _error(capsys).startswith(f"{path}: holds a single .npy array; expected a .npz archive with arrays x")


# ---------------------------------------------------------------- data too small to teach every class


def test_two_examples_are_refused_instead_of_training_to_100_percent_test_error(tmp_path: Path, capsys) -> None:
    path = tmp_path / "two.npz"
    np.savez(path, x=np.array([[0.0, 1.0], [1.0, 0.0]]), y=np.array([0, 1]))
    assert _train(str(path), tmp_path / "run") == 2
    message = _error(capsys)
    assert message.startswith(f"{path}: the training split holds no example of class(es) [")
    assert "which the validation or test split holds (only 1 training example(s) for 2 classes; 1 train / 0 val / " \
           "1 test examples)" in message
    assert message.endswith("add examples, or hold out fewer (--test-size, --val-size)")
    assert not (tmp_path / "run").exists()


def test_a_split_that_leaves_a_class_out_of_training_is_refused(tmp_path: Path, capsys) -> None:
    # 19/19/2 examples, stratified by largest remainder: test takes 9+8+1, validation 6+6+1 of the 10+11+1 left
    path = tmp_path / "rare.npz"
    np.savez(path, **dict(zip("xy", _dataset([19, 19, 2]))))
    assert _train(str(path), tmp_path / "run", "--test-size", "0.45", "--val-size", "13") == 2
    assert _error(capsys) == (
        f"{path}: the training split holds no example of class(es) ['2'], which the validation or test split holds "
        "(9 train / 13 val / 18 test examples); a class never seen in training cannot be learned. Expected at least one "
        "training example of every class: add examples, or hold out fewer (--test-size, --val-size)"
    )
    assert not (tmp_path / "run").exists()


def test_a_class_no_split_holds_is_warned_about_and_training_goes_on(
    tmp_path: Path, capsys, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gap.npz"
    np.savez(path, **dict(zip("xy", _dataset([20, 0, 20]))))
    with caplog.at_level(logging.WARNING, logger="dropnet.trainer.data.dataset"):
        assert _train(str(path), tmp_path / "run") == 0
    assert caplog.messages == [
        f"{path}: no example of class(es) ['1'] in any split (labels run 0..2); the network has an output for each "
        "that is never trained"
    ]
    assert "best epoch 1 of 1" in capsys.readouterr().out
