"""The data layer: real MNIST files, digits splits, user files, downloads and every bad-input case."""

from __future__ import annotations

import gzip
import json
import hashlib
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits as sklearn_digits

from dropnet.core.errors import ConfigError, DataError
from dropnet.trainer.config import DataConfig
from dropnet.trainer.data import Dataset, load_dataset
from dropnet.trainer.data import mnist
from dropnet.trainer.data.download import download, ensure_cached, fetch_url
from dropnet.trainer.data.splits import stratified_holdout

MNIST_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
T10K_LABELS = "t10k-labels-idx1-ubyte.gz"


# ---------------------------------------------------------------- real MNIST


@pytest.fixture(scope="module")
def real_mnist() -> Dataset:
    return load_dataset(DataConfig(name="mnist", data_dir=str(MNIST_DIR)), seed=0)


@pytest.fixture(scope="module")
def raw_train() -> tuple[np.ndarray, np.ndarray]:
    """The 60,000 training images and labels, read the way the data's README describes."""
    images = np.frombuffer(gzip.open(MNIST_DIR / "train-images-idx3-ubyte.gz").read(), np.uint8, offset=16)
    labels = np.frombuffer(gzip.open(MNIST_DIR / "train-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
    return images.reshape(-1, 28, 28), labels


def test_mnist_canonical_label_counts(real_mnist: Dataset) -> None:
    train_and_val = np.concatenate([real_mnist.train.y, real_mnist.val.y])
    assert np.bincount(train_and_val, minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(real_mnist.test.y, minlength=10).tolist() == TEST_COUNTS


def test_mnist_shapes_dtypes_and_values(real_mnist: Dataset) -> None:
    assert real_mnist.train.x.shape == (50_000, 1, 28, 28)
    assert real_mnist.val.x.shape == (10_000, 1, 28, 28)
    assert real_mnist.test.x.shape == (10_000, 1, 28, 28)
    for split in (real_mnist.train, real_mnist.val, real_mnist.test):
        assert split.x.dtype == np.float32 and split.y.dtype == np.int64
        assert (split.x.min(), split.x.max()) == (0.0, 255.0)
    assert real_mnist.train.y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    spec = real_mnist.spec
    assert (spec.shape, spec.num_classes, spec.value_range) == ((1, 28, 28), 10, (0.0, 255.0))
    assert spec.class_labels == tuple("0123456789")


def test_mnist_validation_is_last_10000_of_train(real_mnist: Dataset, raw_train) -> None:
    images, labels = raw_train
    assert np.array_equal(real_mnist.train.y, labels[:50_000])
    assert np.array_equal(real_mnist.val.y, labels[50_000:])
    for row in (0, 4_321, 9_999):
        assert np.array_equal(real_mnist.val.x[row, 0], images[50_000 + row])
    assert np.array_equal(real_mnist.train.x[-1, 0], images[49_999])


def test_mnist_spec_statistics_come_from_the_50k_train_split(real_mnist: Dataset, raw_train) -> None:
    images, _ = raw_train
    values = np.arange(256.0)
    counts = np.bincount(images[:50_000].ravel(), minlength=256)
    mean = (counts * values).sum() / counts.sum()
    std = np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())
    assert real_mnist.spec.mean == pytest.approx(mean, rel=1e-9)
    assert real_mnist.spec.std == pytest.approx(std, rel=1e-9)
    counts_60k = counts + np.bincount(images[50_000:].ravel(), minlength=256)
    assert (counts_60k * values).sum() / counts_60k.sum() == pytest.approx(33.3184, abs=1e-4)
    assert abs(real_mnist.spec.mean - 33.3184) > 0.05


def test_mnist_describe_records_files_and_hashes(real_mnist: Dataset) -> None:
    info = real_mnist.describe()
    assert (info["name"], info["train"], info["val"], info["test"]) == ("mnist", 50_000, 10_000, 10_000)
    assert {Path(s["path"]).name: s["sha256"] for s in info["sources"]} == mnist.FILES
    assert json.loads(json.dumps(info)) == info


# ---------------------------------------------------------------- crafted MNIST-format files


def idx_gz(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    return gzip.compress(header + payload, mtime=0)


def write_mnist(directory: Path, n_train: int = 12, n_test: int = 4, rows: int = 4, cols: int = 5) -> dict[str, bytes]:
    """Four small, valid MNIST-format files with seeded pixels; returns name → file bytes."""
    rng = np.random.default_rng(7)
    files = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        pixels = rng.integers(0, 256, (n, rows, cols), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        files[f"{prefix}-images-idx3-ubyte.gz"] = idx_gz(2051, (n, rows, cols), pixels.tobytes())
        files[f"{prefix}-labels-idx1-ubyte.gz"] = idx_gz(2049, (n,), labels.tobytes())
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return files


def load_mnist_dir(directory: Path, val_size: int | None = 3) -> Dataset:
    return load_dataset(DataConfig(name="mnist", data_dir=str(directory), val_size=val_size), seed=0)


def test_small_mnist_dir_splits_off_the_last_rows(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    data = load_mnist_dir(tmp_path, val_size=3)
    assert (len(data.train), len(data.val), len(data.test)) == (9, 3, 4)
    assert data.train.y.tolist() == list(range(9)) and data.val.y.tolist() == [9, 0, 1]
    assert data.spec.shape == (1, 4, 5)
    assert data.spec.mean == pytest.approx(float(data.train.x.astype(np.float64).mean()), rel=1e-12)


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("train-labels-idx1-ubyte.gz", b"plain bytes", ["train-labels", "gzip"]),
        ("train-labels-idx1-ubyte.gz", idx_gz(2051, (12,), bytes(12)), ["train-labels", "magic number 2051", "2049"]),
        ("t10k-images-idx3-ubyte.gz", idx_gz(2049, (4, 4, 5), bytes(80)), ["t10k-images", "magic number 2049", "2051"]),
        ("train-images-idx3-ubyte.gz", idx_gz(2051, (12, 4, 5), bytes(100)), ["train-images", "truncated", "(12, 4,"]),
        ("train-images-idx3-ubyte.gz", gzip.compress(b"\x00\x00\x08\x03\x00"), ["train-images", "header", "truncated"]),
        ("train-labels-idx1-ubyte.gz", idx_gz(2049, (12,), bytes(13)), ["train-labels", "longer than its header"]),
        ("t10k-labels-idx1-ubyte.gz", idx_gz(2049, (5,), bytes(5)), ["t10k-images", "4 images", "5 labels"]),
        ("train-labels-idx1-ubyte.gz", idx_gz(2049, (12,), bytes(11) + b"\x0c"), ["label 12", "index 11", "0..9"]),
        ("t10k-images-idx3-ubyte.gz", idx_gz(2051, (4, 3, 5), bytes(60)), ["t10k-images", "(4, 5)", "(3, 5)"]),
    ],
)
def test_bad_mnist_files_are_refused(tmp_path: Path, name: str, content: bytes, words: list[str]) -> None:
    write_mnist(tmp_path)
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError) as err:
        load_mnist_dir(tmp_path)
    for word in words:
        assert word in str(err.value)


def test_missing_mnist_file_is_named(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    (tmp_path / T10K_LABELS).unlink()
    with pytest.raises(DataError, match=r"missing MNIST file\(s\) \['t10k-labels-idx1-ubyte.gz'\]"):
        load_mnist_dir(tmp_path)


def test_empty_mnist_files_are_refused(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(idx_gz(2051, (0, 4, 5), b""))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(idx_gz(2049, (0,), b""))
    with pytest.raises(DataError, match="train-images.*no pixels.*at least one image"):
        load_mnist_dir(tmp_path)


def test_mnist_val_size_must_leave_training_examples(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    with pytest.raises(ConfigError, match=r"val_size=12 .*12 examples"):
        load_mnist_dir(tmp_path, val_size=12)


# ---------------------------------------------------------------- downloads into the cache


class FakeMirror:
    """A fetch function serving ``files`` (name → bytes) under ``base``, recording each URL asked for."""

    def __init__(self, files: dict[str, bytes], base: str = "https://mirror.test/mnist/") -> None:
        self.files, self.base, self.urls = files, base, []

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        if not url.startswith(self.base) or url[len(self.base) :] not in self.files:
            raise urllib.error.URLError(f"no route to {url}")
        return self.files[url[len(self.base) :]]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_verifies_and_stores(tmp_path: Path) -> None:
    data = (MNIST_DIR / T10K_LABELS).read_bytes()
    fetch = FakeMirror({T10K_LABELS: data})
    path = download(T10K_LABELS, mnist.FILES[T10K_LABELS], tmp_path, ["https://down.test/", fetch.base], fetch)
    assert path == tmp_path / T10K_LABELS and path.read_bytes() == data
    assert fetch.urls == ["https://down.test/" + T10K_LABELS, fetch.base + T10K_LABELS]
    assert [p.name for p in tmp_path.iterdir()] == [T10K_LABELS]


def test_download_with_wrong_checksum_is_discarded(tmp_path: Path) -> None:
    corrupted = bytearray((MNIST_DIR / T10K_LABELS).read_bytes())
    corrupted[100] ^= 0xFF
    fetch = FakeMirror({T10K_LABELS: bytes(corrupted)})
    with pytest.raises(DataError) as err:
        download(T10K_LABELS, mnist.FILES[T10K_LABELS], tmp_path, [fetch.base], fetch)
    message = str(err.value)
    assert T10K_LABELS in message and mnist.FILES[T10K_LABELS] in message and sha(bytes(corrupted)) in message
    assert list(tmp_path.iterdir()) == []


def test_a_mirror_with_a_wrong_checksum_is_skipped_for_the_next_one(tmp_path: Path) -> None:
    data = (MNIST_DIR / T10K_LABELS).read_bytes()
    bad = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
    corrupted = FakeMirror({T10K_LABELS: bad}, base="https://corrupt.test/")
    good = FakeMirror({T10K_LABELS: data})

    def fetch(url: str) -> bytes:
        return (corrupted if url.startswith(corrupted.base) else good)(url)

    path = download(T10K_LABELS, mnist.FILES[T10K_LABELS], tmp_path, [corrupted.base, good.base], fetch)
    assert path.read_bytes() == data
    assert corrupted.urls == [corrupted.base + T10K_LABELS] and good.urls == [good.base + T10K_LABELS]


def test_when_every_mirror_fails_the_error_lists_each_problem(tmp_path: Path) -> None:
    corrupted = FakeMirror({T10K_LABELS: b"corrupted"}, base="https://corrupt.test/")
    down = FakeMirror({}, base="https://down.test/")

    def fetch(url: str) -> bytes:
        return (corrupted if url.startswith(corrupted.base) else down)(url)

    with pytest.raises(DataError) as err:
        download(T10K_LABELS, mnist.FILES[T10K_LABELS], tmp_path, [corrupted.base, down.base], fetch)
    message = str(err.value)
    assert f"{corrupted.base}{T10K_LABELS} (SHA-256 {sha(b'corrupted')}, expected {mnist.FILES[T10K_LABELS]}" in message
    assert f"{down.base}{T10K_LABELS} (<urlopen error no route to {down.base}{T10K_LABELS}>)" in message
    assert list(tmp_path.iterdir()) == []


def test_download_fails_when_no_mirror_answers(tmp_path: Path) -> None:
    fetch = FakeMirror({})
    with pytest.raises(DataError, match=r"could not download t10k-labels.*no route.*data_dir"):
        download(T10K_LABELS, mnist.FILES[T10K_LABELS], tmp_path, [fetch.base], fetch)


def test_download_from_a_file_url_with_urllib(tmp_path: Path) -> None:
    path = download(T10K_LABELS, mnist.FILES[T10K_LABELS], tmp_path, [MNIST_DIR.as_uri() + "/"], fetch_url)
    assert sha(path.read_bytes()) == mnist.FILES[T10K_LABELS]


def test_cache_downloads_once_and_replaces_a_corrupted_file(tmp_path: Path) -> None:
    files = write_mnist(tmp_path / "origin")
    hashes = {name: sha(data) for name, data in files.items()}
    fetch = FakeMirror(files)
    cache = tmp_path / "cache"
    assert ensure_cached(hashes, cache, [fetch.base], fetch) == {name: cache / name for name in files}
    assert len(fetch.urls) == 4
    ensure_cached(hashes, cache, [fetch.base], fetch)
    assert len(fetch.urls) == 4
    (cache / T10K_LABELS).write_bytes(b"corrupted")
    ensure_cached(hashes, cache, [fetch.base], fetch)
    assert fetch.urls[4:] == [fetch.base + T10K_LABELS]
    assert (cache / T10K_LABELS).read_bytes() == files[T10K_LABELS]


def test_cache_dir_follows_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert mnist.cache_dir() == tmp_path / "xdg" / "dropnet" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert mnist.cache_dir() == tmp_path / "home" / ".cache" / "dropnet" / "mnist"


def test_mnist_without_data_dir_loads_from_the_verified_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = write_mnist(tmp_path / "origin")
    fetch = FakeMirror(files, base=mnist.MIRRORS[-1])
    monkeypatch.setattr(mnist, "FILES", {name: sha(data) for name, data in files.items()})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    data = mnist.load_mnist(None, val_size=2, fetch=fetch)
    assert (len(data.train), len(data.val), len(data.test)) == (10, 2, 4)
    assert {Path(s["path"]).parent for s in data.describe()["sources"]} == {tmp_path / "xdg" / "dropnet" / "mnist"}


# ---------------------------------------------------------------- digits and splits


def test_digits_sizes_stratification_and_spec() -> None:
    data = load_dataset(DataConfig(), seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (1198, 239, 360)
    full = np.bincount(sklearn_digits().target, minlength=10)
    parts = [np.bincount(s.y, minlength=10) for s in (data.train, data.val, data.test)]
    assert np.array_equal(sum(parts), full)
    assert np.all(np.abs(parts[2] - full * 360 / 1797) < 1)
    assert np.all(np.abs(parts[1] - (full - parts[2]) * 239 / 1437) < 1)
    assert data.train.x.shape == (1198, 1, 8, 8) and data.train.x.dtype == np.float32
    spec = data.spec
    assert (spec.shape, spec.num_classes, spec.value_range) == ((1, 8, 8), 10, (0.0, 16.0))
    assert spec.mean == pytest.approx(float(data.train.x.astype(np.float64).mean()), rel=1e-12)
    assert spec.std == pytest.approx(float(data.train.x.astype(np.float64).std()), rel=1e-12)
    assert data.describe() == {
        "name": "digits", "origin": data.origin, "train": 1198, "val": 239, "test": 360, "sources": [],
    }


def test_digits_split_is_seeded() -> None:
    first, again, other = (load_dataset(DataConfig(), seed=s) for s in (3, 3, 4))
    for name in ("train", "val", "test"):
        assert np.array_equal(getattr(first, name).x, getattr(again, name).x)
        assert np.array_equal(getattr(first, name).y, getattr(again, name).y)
    assert not np.array_equal(first.test.x, other.test.x)
    assert not np.array_equal(first.val.x, other.val.x)


def test_digits_explicit_val_size_and_no_validation() -> None:
    data = load_dataset(DataConfig(val_size=100, test_size=0.5), seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (798, 100, 899)
    data = load_dataset(DataConfig(val_size=0), seed=0)
    assert (len(data.train), len(data.val)) == (1437, 0)
    assert data.val.x.shape == (0, 1, 8, 8) and data.val.y.dtype == np.int64


def test_stratified_holdout_rounds_by_largest_remainder() -> None:
    y = np.array([0] * 5 + [1] * 3 + [2] * 2)
    keep, held = stratified_holdout(y, 3, np.random.default_rng(0))
    assert np.bincount(y[held]).tolist() == [1, 1, 1]
    assert sorted(np.concatenate([keep, held]).tolist()) == list(range(10))


def test_unknown_dataset_name_lists_what_is_accepted() -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'cifar'.*'digits', 'mnist'.*\.npz or \.csv"):
        load_dataset(DataConfig(name="cifar"), seed=0)


# ---------------------------------------------------------------- user files


def test_npz_file_happy_path(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3, 4))
    y = np.arange(40) % 4
    path = tmp_path / "mine.npz"
    np.savez(path, x=x, y=y)
    data = load_dataset(DataConfig(name=str(path)), seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (27, 5, 8)
    spec = data.spec
    assert (spec.shape, spec.num_classes, spec.class_labels) == ((3, 4), 4, ("0", "1", "2", "3"))
    assert spec.value_range == (float(data.train.x.min()), float(data.train.x.max()))
    source = {"path": str(path), "sha256": sha(path.read_bytes()), "bytes": path.stat().st_size}
    assert data.describe()["sources"] == [source]
    rows = np.concatenate([data.train.x, data.val.x, data.test.x]).reshape(40, -1)
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, x.astype(np.float32).reshape(40, -1).tolist()))


@pytest.mark.parametrize("header", ["f1,f2,label\n", ""])
def test_csv_file_happy_path(tmp_path: Path, header: str) -> None:
    body = "".join(f"{i},{i * 0.5},{i % 3}.0\n" for i in range(30))
    path = tmp_path / "mine.csv"
    path.write_text(header + body + "\n")
    data = load_dataset(DataConfig(name=str(path), val_size=4), seed=2)
    assert (len(data.train), len(data.val), len(data.test)) == (20, 4, 6)
    assert data.spec.shape == (2,) and data.spec.num_classes == 3
    for split in (data.train, data.val, data.test):
        assert np.array_equal(split.y, split.x[:, 0].astype(np.int64) % 3)
        assert np.array_equal(split.x[:, 1], split.x[:, 0] * 0.5)


NPZ_CASES = {
    "missing y": ({"x": np.ones((4, 2))}, ["missing array(s) ['y']", "'x'"]),
    "x 1-D": ({"x": np.ones(4), "y": np.zeros(4, int)}, ["array x has shape (4,)", "at least 2 dimensions"]),
    "y 2-D": ({"x": np.ones((4, 2)), "y": np.zeros((4, 1), int)}, ["array y has shape (4, 1)", "1-D"]),
    "length mismatch": ({"x": np.ones((4, 2)), "y": np.zeros(3, int)}, ["4 examples", "3 labels"]),
    "empty": ({"x": np.ones((0, 2)), "y": np.zeros(0, int)}, ["0 examples"]),
    "NaN": ({"x": np.array([[0.0, 1], [np.nan, 2], [3, 4]]), "y": np.zeros(3, int)}, ["example 1", "NaN or infinite"]),
    "Inf": ({"x": np.array([[0.0, 1], [2, np.inf]]), "y": np.zeros(2, int)}, ["example 1", "NaN or infinite"]),
    "negative label": ({"x": np.ones((3, 2)), "y": np.array([0, -1, 1])}, ["label -1", "example 1", "non-negative"]),
    "fractional label": ({"x": np.ones((3, 2)), "y": np.array([0, 1.5, 1])}, ["label 1.5", "example 1"]),
    "string labels": ({"x": np.ones((2, 2)), "y": np.array(["a", "b"])}, ["dtype <U1", "integer labels"]),
    "string x": ({"x": np.array([["a", "b"]]), "y": np.zeros(1, int)}, ["array x has dtype", "expected numbers"]),
    "no features": ({"x": np.ones((3, 0)), "y": np.zeros(3, int)}, ["shape (0,)", "no values"]),
    "beyond float32": ({"x": np.array([[1e39, 1], [2, 3]]), "y": np.zeros(2, int)}, ["example 0", "float32 range"]),
    "label gap": ({"x": np.ones((3, 2)), "y": np.array([0, 1, 99])}, ["label 99", "100 classes", "3 examples"]),
}


@pytest.mark.parametrize("case", NPZ_CASES)
def test_bad_npz_files_are_refused(tmp_path: Path, case: str) -> None:
    arrays, words = NPZ_CASES[case]
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(name=str(path)), seed=0)
    message = str(err.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_unreadable_and_missing_npz_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"not a zip archive")
    with pytest.raises(DataError, match=r"garbage\.npz: not a \.npz archive \(its 17 bytes do not start like a zip"):
        load_dataset(DataConfig(name=str(path)), seed=0)
    with pytest.raises(DataError, match=r"absent\.npz: file not found"):
        load_dataset(DataConfig(name=str(tmp_path / "absent.npz")), seed=0)
    single = tmp_path / "single.npz"
    with single.open("wb") as f:
        np.save(f, np.ones((4, 2)))
    with pytest.raises(DataError, match=r"single\.npz: holds a single \.npy array"):
        load_dataset(DataConfig(name=str(single)), seed=0)


def test_negative_seed_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"seed must be an int in \[0, 2\*\*63\), got -1"):
        load_dataset(DataConfig(), seed=-1)


CSV_CASES = {
    "non-numeric cell": ("a,b,c\n1,2,0\n3,x7,1\n", ["line 3, column 2", "'x7' is not a number"]),
    "ragged row": ("1,2,0\n3,4\n", ["line 2 has 2 columns", "expected 3"]),
    "NaN": ("1,2,0\nnan,4,1\n", ["line 2", "NaN or infinite"]),
    "negative label": ("1,2,0\n3,4,-2\n", ["label -2.0", "line 2"]),
    "empty": ("label\n\n", ["no data rows"]),
    "one column": ("1\n2\n", ["1 column", "label column"]),
    "not UTF-8": (b"1,2,0\n\xff\xfe,1,1\n", ["not UTF-8", "byte 6"]),
}


@pytest.mark.parametrize("case", CSV_CASES)
def test_bad_csv_files_are_refused(tmp_path: Path, case: str) -> None:
    content, words = CSV_CASES[case]
    path = tmp_path / "bad.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(name=str(path)), seed=0)
    message = str(err.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_too_few_examples_to_split(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("1,2,0\n")
    with pytest.raises(DataError, match="1 example.*too few"):
        load_dataset(DataConfig(name=str(path)), seed=0)


def test_constant_inputs_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "flat.csv"
    path.write_text("".join(f"5,5,{i % 2}\n" for i in range(10)))
    with pytest.raises(DataError, match="every value .* equals 5"):
        load_dataset(DataConfig(name=str(path)), seed=0)
