"""Data: fixed stratified digits splits, the offline torchvision path, and augmentation."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from caat_app.data import AUGMENT, DATASETS
from caat_app.data import digits as digits_mod
from caat_app.data import splits as data_mod
from caat_app.data.augment import augment
from caat_app.data.splits import DataUnavailable, load_dataset


@pytest.fixture(scope="module")
def digits() -> data_mod.DataSplits:
    return load_dataset("digits")


def test_digits_shapes_and_range(digits) -> None:
    assert (len(digits.y_train), len(digits.y_val), len(digits.y_test)) == (1257, 270, 270)
    for x, y in (
        (digits.x_train, digits.y_train),
        (digits.x_val, digits.y_val),
        (digits.x_test, digits.y_test),
    ):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (1, 8, 8) and x.shape[0] == y.shape[0]
        assert x.min() >= 0.0 and x.max() <= 1.0
    assert x.max() == 1.0
    assert (digits.num_classes, digits.in_channels, digits.image_size) == (10, 1, 8)
    assert len(digits.mean) == len(digits.std) == 1 and digits.std[0] > 0


def test_digits_split_is_disjoint_and_covers_everything(digits) -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train, val, test = digits_mod.digits_split_indices(bunch.target)
    everything = np.concatenate([train, val, test])
    assert len(everything) == 1797 and len(np.unique(everything)) == 1797
    source = torch.from_numpy(bunch.data / 16.0).float().view(-1, 1, 8, 8)
    for idx, x, y in (
        (train, digits.x_train, digits.y_train),
        (val, digits.x_val, digits.y_val),
        (test, digits.x_test, digits.y_test),
    ):
        assert torch.equal(x, source[idx])
        assert torch.equal(y, torch.from_numpy(bunch.target[idx]).long())


def test_digits_split_is_stratified(digits) -> None:
    labels = torch.cat([digits.y_train, digits.y_val, digits.y_test])
    total = torch.bincount(labels, minlength=10).float()
    for y, share in ((digits.y_train, 0.70), (digits.y_val, 0.15), (digits.y_test, 0.15)):
        counts = torch.bincount(y, minlength=10).float()
        assert (counts > 0).all()
        assert ((counts - share * total).abs() <= 2).all()


def test_digits_split_is_fixed(digits) -> None:
    torch.manual_seed(123)
    np.random.seed(123)
    again = load_dataset("digits")
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(digits, field), getattr(again, field))
    assert digits.mean == again.mean and digits.std == again.std


def test_unknown_dataset_lists_choices() -> None:
    with pytest.raises(ValueError, match="digits, mnist, cifar10, cifar100"):
        load_dataset("synthetic")


def _assert_one_line_naming(err: DataUnavailable, folder: Path) -> None:
    message = str(err)
    assert "\n" not in message
    assert str(folder) in message


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_offline_without_download(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataUnavailable) as info:
        load_dataset(name, root=tmp_path, download=False)
    _assert_one_line_naming(info.value, tmp_path / name)
    assert "downloading is off" in str(info.value)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_failed_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    calls: list[object] = []

    def offline(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataUnavailable) as info:
        load_dataset(name, root=tmp_path, download=True)
    assert calls, "torchvision's real download code should have tried the network"
    _assert_one_line_naming(info.value, tmp_path / name)
    assert "could not be downloaded" in str(info.value)


def test_default_root_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAAT_DATA", raising=False)
    monkeypatch.setenv("CAAT_HOME", str(tmp_path / "home"))
    assert data_mod.default_data_root() == tmp_path / "home" / "data"
    monkeypatch.setenv("CAAT_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(DataUnavailable) as info:
        load_dataset("cifar10", download=False)
    _assert_one_line_naming(info.value, tmp_path / "elsewhere" / "cifar10")


def test_augment_table() -> None:
    assert set(AUGMENT) == set(DATASETS)
    assert AUGMENT["digits"] is None
    assert AUGMENT["cifar100"] == AUGMENT["cifar10"]


def test_augment_keeps_shape_and_range_and_is_seeded() -> None:
    x = torch.rand(32, 3, 16, 16)
    params = {"flip": True, "translate": 3, "rotate_deg": 15.0}
    a = augment(x, **params, generator=torch.Generator().manual_seed(7))
    b = augment(x, **params, generator=torch.Generator().manual_seed(7))
    c = augment(x, **params, generator=torch.Generator().manual_seed(8))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, x)


def test_flip_only_is_an_exact_mirror() -> None:
    x = torch.rand(64, 3, 8, 8)
    out = augment(
        x, flip=True, translate=0, rotate_deg=0.0, generator=torch.Generator().manual_seed(0)
    )
    mirrored = torch.tensor([torch.equal(o, s.flip(-1)) for o, s in zip(out, x, strict=True)])
    kept = torch.tensor([torch.equal(o, s) for o, s in zip(out, x, strict=True)])
    assert (mirrored | kept).all()
    assert 10 < int(mirrored.sum()) < 54


def _shift(img: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Pad-and-crop reference: content moves by (−dx, −dy) pixels, zeros fill in."""
    _, h, w = img.shape
    padded = torch.nn.functional.pad(img, (2, 2, 2, 2))
    return padded[:, 2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w]


def test_translate_only_is_pad_and_crop() -> None:
    x = torch.rand(32, 1, 8, 8)
    out = augment(
        x, flip=False, translate=2, rotate_deg=0.0, generator=torch.Generator().manual_seed(1)
    )
    seen = set()
    for o, s in zip(out, x, strict=True):
        matches = [
            (dx, dy)
            for dx in range(-2, 3)
            for dy in range(-2, 3)
            if torch.allclose(o, _shift(s, dx, dy), atol=1e-5)
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 5


def _idx(path: Path, array: np.ndarray) -> None:
    """An array in MNIST's IDX format (big-endian header: magic, then each dimension)."""
    magic = 0x0800 | array.ndim  # unsigned bytes, then the number of dimensions
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_from_a_tree_of_its_own_files(tmp_path: Path) -> None:
    """The torchvision path end to end, on a small tree in MNIST's real file format."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    n_train, n_test = 5200, 40  # the validation split holds out 5 000
    train_labels = np.arange(n_train) % 10
    test_labels = np.arange(n_test) % 10
    _idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (n_train, 28, 28)))
    _idx(raw / "train-labels-idx1-ubyte", train_labels)
    _idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28)))
    _idx(raw / "t10k-labels-idx1-ubyte", test_labels)

    data = load_dataset("mnist", root=tmp_path, download=False)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (200, 5000, 40)
    assert data.x_train.shape[1:] == (1, 28, 28) and data.x_train.dtype == torch.float32
    assert float(data.x_train.min()) >= 0.0 and float(data.x_train.max()) <= 1.0
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 1, 28)
    assert torch.bincount(data.y_val, minlength=10).tolist() == [500] * 10  # stratified
    assert torch.equal(data.y_test, torch.from_numpy(test_labels))
