"""MNIST and CIFAR through torchvision: the official train set minus a fixed stratified
validation set, and the official test set. Offline without the files, one line says
which folder to fill and with what.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from caat_app.data.registry import Dataset
from caat_app.data.splits import VAL_SIZE, DataSplits, DataUnavailable, stratified_split


def _unavailable(entry: Dataset, folder: Path, download: bool) -> DataUnavailable:
    fill = entry.fill.replace("{folder}", str(folder))
    if download:
        msg = (
            f"{entry.title} is not in {folder} and could not be downloaded (no network?): "
            f"{fill}, or run once on a machine with network access"
        )
    else:
        msg = (
            f"{entry.title} is not in {folder} and downloading is off: "
            f"{fill}, or allow the download on a machine with network access"
        )
    return DataUnavailable(" ".join(msg.split()))


def _dataset_class(entry: Dataset) -> Any:
    from torchvision import datasets

    return getattr(datasets, entry.source)


def _archives_present(entry: Dataset, folder: Path) -> bool:
    """True when the verified archives lie in the folder, so torchvision only extracts them."""
    from torchvision.datasets.utils import check_integrity

    cls = _dataset_class(entry)
    if hasattr(cls, "resources"):  # MNIST: four files under <folder>/MNIST/raw
        raw = folder / cls.__name__ / "raw"
        return all(check_integrity(raw / fname, md5) for fname, md5 in cls.resources)
    return bool(check_integrity(folder / cls.filename, cls.tgz_md5))


def _open(entry: Dataset, folder: Path, train: bool, download: bool) -> Any:
    """One official split through torchvision, turning every failure into DataUnavailable."""
    cls = _dataset_class(entry)
    try:
        return cls(root=str(folder), train=train, download=False)
    except Exception:
        pass
    # With verified archives on disk torchvision's download step only extracts them,
    # so it is safe (no network) even when downloading is off.
    if not download and not _archives_present(entry, folder):
        raise _unavailable(entry, folder, download) from None
    try:
        return cls(root=str(folder), train=train, download=True)
    except Exception as exc:
        raise _unavailable(entry, folder, download) from exc


def ensure(entry: Dataset, folder: Path, download: bool) -> None:
    """Both official splits can be opened (fetched first if need be), or DataUnavailable."""
    for train in (True, False):
        _open(entry, folder, train, download)


def _images(data: Any) -> Tensor:
    """uint8 (N, H, W) or (N, H, W, C) arrays → float32 (N, C, H, W) in [0, 1]."""
    t = torch.as_tensor(np.asarray(data))
    t = t.unsqueeze(1) if t.dim() == 3 else t.permute(0, 3, 1, 2)
    return t.contiguous().float().div_(255.0)


def _labels(targets: Any) -> Tensor:
    return torch.as_tensor(np.asarray(targets), dtype=torch.int64)


def load(entry: Dataset, folder: Path, download: bool) -> DataSplits:
    """Official train set minus a fixed stratified validation set; official test set."""
    train_set = _open(entry, folder, True, download)
    test_set = _open(entry, folder, False, download)
    labels = np.asarray(train_set.targets, dtype=np.int64)
    keep, held = stratified_split(labels, VAL_SIZE)
    raw = np.asarray(train_set.data)  # index the uint8 array before widening to float
    x_train, x_val = _images(raw[keep]), _images(raw[held])
    y_train, y_val = _labels(labels[keep]), _labels(labels[held])
    x_test, y_test = _images(test_set.data), _labels(test_set.targets)
    assert entry.stats is not None
    mean, std = entry.stats
    return DataSplits(
        name=entry.name,
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        num_classes=entry.classes,
        in_channels=x_train.shape[1],
        image_size=x_train.shape[-1],
        mean=mean,
        std=std,
    )
