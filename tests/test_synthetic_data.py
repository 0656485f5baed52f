"""synthetic-cifar: CIFAR-10's shapes, splits and budget, generated; and learnable."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from caat_app.config import build_config
from caat_app.data import AUGMENT, DATASETS
from caat_app.data.splits import load_dataset
from caat_app.data.synthetic import TINY, synthetic_cifar


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x}


def test_shapes_range_and_balanced_stratified_splits() -> None:
    data = synthetic_cifar(1000, 200)
    assert data.x_train.shape == (900, 3, 32, 32) and data.x_val.shape == (100, 3, 32, 32)
    assert data.x_test.shape == (200, 3, 32, 32)
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 3, 32)
    for x in (data.x_train, data.x_val, data.x_test):
        assert x.dtype == torch.float32 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # Every class equally often in each split: the validation tenth is stratified.
    assert torch.bincount(data.y_train, minlength=10).tolist() == [90] * 10
    assert torch.bincount(data.y_val, minlength=10).tolist() == [10] * 10
    assert torch.bincount(data.y_test, minlength=10).tolist() == [20] * 10
    # Validation images are held out of training, and test images are new ones.
    assert not _rows(data.x_val) & _rows(data.x_train)
    assert not _rows(data.x_test) & (_rows(data.x_train) | _rows(data.x_val))
    # The normalisation stats are the training images' per-channel mean and std.
    flat = data.x_train.transpose(0, 1).reshape(3, -1)
    assert data.mean == pytest.approx(flat.mean(1).tolist(), abs=0.01)
    assert data.std == pytest.approx(flat.std(1).tolist(), abs=0.01)


def test_same_seed_same_tensors_other_seed_other_images() -> None:
    a, b = synthetic_cifar(200, 50), synthetic_cifar(200, 50)
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    other = synthetic_cifar(200, 50, seed=1)
    assert not torch.equal(a.x_train, other.x_train)


def test_too_few_images_is_refused() -> None:
    with pytest.raises(ValueError, match="needs"):
        synthetic_cifar(50, 50)


def test_registered_with_cifar_budget_and_augmentation() -> None:
    for name in ("synthetic-cifar", "synthetic-cifar-tiny"):
        assert "synthetic" in DATASETS[name].title.lower() and "not cifar-10" in (
            DATASETS[name].title.lower()
        )
        cfg = build_config({"dataset": name})
        assert (cfg.eps, cfg.alpha) == (pytest.approx(8 / 255), pytest.approx(2 / 255))
        assert AUGMENT[name] == AUGMENT["cifar10"]
    tiny = load_dataset("synthetic-cifar-tiny")
    again = synthetic_cifar(*TINY, name="synthetic-cifar-tiny")
    assert tiny.name == "synthetic-cifar-tiny" and torch.equal(tiny.x_test, again.x_test)
    assert len(tiny.y_train) + len(tiny.y_val) == TINY[0] and len(tiny.y_test) == TINY[1]


@pytest.mark.slow
def test_full_size_has_cifar10_counts() -> None:
    data = load_dataset("synthetic-cifar")
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (45_000, 5_000, 10_000)
    assert torch.bincount(data.y_val).tolist() == [500] * 10


def test_a_tiny_cnn_learns_it_well_above_chance() -> None:
    data = synthetic_cifar(*TINY)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(4),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        idx = torch.randint(0, len(data.y_train), (64,), generator=gen)
        loss = nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        accuracy = float((model(data.x_test).argmax(1) == data.y_test).float().mean())
    assert accuracy > 0.6  # chance is 0.1
