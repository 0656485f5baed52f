"""Data sets as whole tensors in [0, 1], and batched on-device augmentation (no DataLoader)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from caat_app.config import DATASETS
from caat_app.errors import CaatError

AUGMENT: dict[str, dict[str, Any] | None] = {
    "digits": None,
    "mnist": {"flip": False, "translate": 2, "rotate_deg": 10.0},
    "cifar10": {"flip": True, "translate": 4, "rotate_deg": 15.0},
    "cifar100": {"flip": True, "translate": 4, "rotate_deg": 15.0},
}

VAL_SIZE = 5000
_SPLIT_SEED = 0

# Per-channel statistics of the official training sets (the usual published values).
_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

_TITLES = {"mnist": "MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


class DataUnavailable(CaatError):
    """A data set is neither on disk nor downloadable; the message is one line for the user."""


@dataclass(frozen=True, eq=False)
class DataSplits:
    """A data set held as whole tensors, so training batches are plain index slices."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def default_data_root() -> Path:
    """``CAAT_DATA``, else ``$CAAT_HOME/data`` (CAAT_HOME defaults to the user data folder)."""
    if env := os.environ.get("CAAT_DATA"):
        return Path(env).expanduser()
    home = os.environ.get("CAAT_HOME")
    if not home:
        import platformdirs

        home = platformdirs.user_data_dir("caat")
    return Path(home).expanduser() / "data"


def load_dataset(name: str, *, root: Path | None = None, download: bool = True) -> DataSplits:
    """Load a data set with fixed train/val/test splits that no run seed changes."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "digits":
        return _load_digits()
    folder = (Path(root).expanduser() if root is not None else default_data_root()) / name
    return _load_torchvision(name, folder, download)


def ensure_available(name: str, *, root: Path | None = None, download: bool = True) -> None:
    """Fail fast, before a run is recorded, when a data set can be neither read nor fetched."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "digits":
        return
    folder = (Path(root).expanduser() if root is not None else default_data_root()) / name
    for train in (True, False):
        _open(name, folder, train, download)


def _stratified_split(
    labels: np.ndarray, test_size: float | int, seed: int = _SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    keep, held = train_test_split(idx, test_size=test_size, stratify=labels, random_state=seed)
    return np.sort(keep), np.sort(held)


def _digits_split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """70/15/15 stratified train/val/test indices, fixed whatever the run seed."""
    train, rest = _stratified_split(labels, 0.30)
    val_pos, test_pos = _stratified_split(labels[rest], 0.50)
    return train, rest[val_pos], rest[test_pos]


def _load_digits() -> DataSplits:
    """scikit-learn's 8×8 digits, shipped with the package, so it needs no network."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy((bunch.data / 16.0).astype(np.float32)).view(-1, 1, 8, 8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    y = torch.from_numpy(labels)
    train, val, test = _digits_split_indices(labels)
    x_train = x[train]
    mean = float(x_train.mean())
    std = float(x_train.std())
    return DataSplits(
        name="digits",
        x_train=x_train,
        y_train=y[train],
        x_val=x[val],
        y_val=y[val],
        x_test=x[test],
        y_test=y[test],
        num_classes=10,
        in_channels=1,
        image_size=8,
        mean=(mean,),
        std=(std,),
    )


def _how_to_fill(name: str, folder: Path) -> str:
    """Which files to put where, so an offline user can fix it by hand."""
    if name == "mnist":
        return (
            f"put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            f"t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz "
            f"(https://ossci-datasets.s3.amazonaws.com/mnist/) in {folder / 'MNIST' / 'raw'}"
        )
    archive = "cifar-10-python.tar.gz" if name == "cifar10" else "cifar-100-python.tar.gz"
    return f"put {archive} (https://www.cs.toronto.edu/~kriz/cifar.html) there"


def _unavailable(name: str, folder: Path, download: bool) -> DataUnavailable:
    title = _TITLES[name]
    if download:
        msg = (
            f"{title} is not in {folder} and could not be downloaded (no network?): "
            f"{_how_to_fill(name, folder)}, or run once on a machine with network access"
        )
    else:
        msg = (
            f"{title} is not in {folder} and downloading is off: "
            f"{_how_to_fill(name, folder)}, or allow the download on a machine with network access"
        )
    return DataUnavailable(" ".join(msg.split()))


def _dataset_class(name: str) -> Any:
    from torchvision import datasets

    return {"mnist": datasets.MNIST, "cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[
        name
    ]


def _archives_present(name: str, folder: Path) -> bool:
    """True when the verified archives lie in the folder, so torchvision only extracts them."""
    from torchvision.datasets.utils import check_integrity

    cls = _dataset_class(name)
    if name == "mnist":
        raw = folder / cls.__name__ / "raw"
        return all(check_integrity(raw / fname, md5) for fname, md5 in cls.resources)
    return bool(check_integrity(folder / cls.filename, cls.tgz_md5))


def _open(name: str, folder: Path, train: bool, download: bool) -> Any:
    """One official split through torchvision, turning every failure into DataUnavailable."""
    cls = _dataset_class(name)
    try:
        return cls(root=str(folder), train=train, download=False)
    except Exception:
        pass
    # With verified archives on disk torchvision's download step only extracts them,
    # so it is safe (no network) even when downloading is off.
    if not download and not _archives_present(name, folder):
        raise _unavailable(name, folder, download) from None
    try:
        return cls(root=str(folder), train=train, download=True)
    except Exception as exc:
        raise _unavailable(name, folder, download) from exc


def _images(data: Any) -> Tensor:
    """uint8 (N, H, W) or (N, H, W, C) arrays → float32 (N, C, H, W) in [0, 1]."""
    t = torch.as_tensor(np.asarray(data))
    t = t.unsqueeze(1) if t.dim() == 3 else t.permute(0, 3, 1, 2)
    return t.contiguous().float().div_(255.0)


def _labels(targets: Any) -> Tensor:
    return torch.as_tensor(np.asarray(targets), dtype=torch.int64)


def _load_torchvision(name: str, folder: Path, download: bool) -> DataSplits:
    """Official train set minus a fixed stratified validation set; official test set."""
    train_set = _open(name, folder, True, download)
    test_set = _open(name, folder, False, download)
    labels = np.asarray(train_set.targets, dtype=np.int64)
    keep, held = _stratified_split(labels, VAL_SIZE)
    raw = np.asarray(train_set.data)  # index the uint8 array before widening to float
    x_train, x_val = _images(raw[keep]), _images(raw[held])
    y_train, y_val = _labels(labels[keep]), _labels(labels[held])
    x_test, y_test = _images(test_set.data), _labels(test_set.targets)
    mean, std = _STATS[name]
    return DataSplits(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        num_classes=100 if name == "cifar100" else 10,
        in_channels=x_train.shape[1],
        image_size=x_train.shape[-1],
        mean=mean,
        std=std,
    )


def augment(
    x: Tensor,
    *,
    flip: bool,
    translate: int,
    rotate_deg: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random per-sample flip, then shift and rotation in one resampling pass.

    Shifts are whole pixels with zero fill, i.e. pad-and-random-crop; the flip is an exact
    mirror. Everything stays on ``x``'s device and the batch is handled at once.
    """
    n, _, h, w = x.shape
    out = x
    if flip:
        mirror = torch.rand(n, generator=generator, device=x.device) < 0.5
        out = torch.where(mirror.view(n, 1, 1, 1), x.flip(-1), x)
    if translate <= 0 and rotate_deg <= 0:
        return out
    shift = torch.randint(
        -translate, translate + 1, (n, 2), generator=generator, device=x.device
    ).to(x.dtype)
    angle = (torch.rand(n, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * (
        math.radians(rotate_deg)
    )
    cos, sin = angle.cos(), angle.sin()
    # affine_grid maps output to input in [-1, 1] coordinates: rotate in pixel space
    # (hence the aspect factors) and shift by 2·pixels / size.
    theta = torch.stack(
        [
            torch.stack([cos, -sin * (h / w), shift[:, 0] * (2.0 / w)], dim=1),
            torch.stack([sin * (w / h), cos, shift[:, 1] * (2.0 / h)], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(out.shape), align_corners=False)
    out = F.grid_sample(out, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp_(0.0, 1.0)
