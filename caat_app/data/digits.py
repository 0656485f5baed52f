"""scikit-learn's 8×8 handwritten digits: shipped with the package, so they need no network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from caat_app.data.registry import Dataset
from caat_app.data.splits import DataSplits, stratified_split


def digits_split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """70/15/15 stratified train/val/test indices, fixed whatever the run seed."""
    train, rest = stratified_split(labels, 0.30)
    val_pos, test_pos = stratified_split(labels[rest], 0.50)
    return train, rest[val_pos], rest[test_pos]


def load(entry: Dataset, folder: Path, download: bool) -> DataSplits:
    """A fixed stratified 70/15/15 split; the folder and the download flag are not used."""
    del folder, download
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy((bunch.data / 16.0).astype(np.float32)).view(-1, 1, 8, 8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    y = torch.from_numpy(labels)
    train, val, test = digits_split_indices(labels)
    x_train = x[train]
    mean = float(x_train.mean())
    std = float(x_train.std())
    return DataSplits(
        name=entry.name,
        x_train=x_train,
        y_train=y[train],
        x_val=x[val],
        y_val=y[val],
        x_test=x[test],
        y_test=y[test],
        num_classes=entry.classes,
        in_channels=1,
        image_size=8,
        mean=(mean,),
        std=(std,),
    )
