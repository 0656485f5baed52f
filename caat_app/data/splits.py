"""Data sets as whole tensors in [0, 1] with fixed splits, loaded by their registry name.

No DataLoader: batches are index slices of tensors that live on the device.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from caat_app.data.registry import DATASETS, Dataset
from caat_app.errors import CaatError
from caat_app.registry import load

if TYPE_CHECKING:
    from caat_app.config import RunConfig

VAL_SIZE = 5000
SPLIT_SEED = 0


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


def data_folder(entry: Dataset, root: Path | None) -> Path:
    """Where a data set's files are: `<root>/<name>`, or the --data-dir itself for a tree
    the person names (an ImageFolder tree)."""
    if root is not None and entry.own_dir:
        return Path(root).expanduser()
    return (Path(root).expanduser() if root is not None else default_data_root()) / entry.name


def resized(data: DataSplits, size: int) -> DataSplits:
    """Every split resampled to size×size: bilinear, antialiased when shrinking.

    For a model that wants bigger images than the data set has (a ViT on the 8×8 digits);
    done in chunks so that only the result is held whole.
    """

    def one(x: Tensor) -> Tensor:
        out = torch.empty((len(x), x.shape[1], size, size), dtype=x.dtype)
        shrink = size < min(x.shape[-2:])
        for i in range(0, len(x), 1024):
            chunk = F.interpolate(
                x[i : i + 1024],
                (size, size),
                mode="bilinear",
                align_corners=False,
                antialias=shrink,
            )
            out[i : i + 1024] = chunk.clamp_(0.0, 1.0)
        return out

    return dataclasses.replace(
        data,
        x_train=one(data.x_train),
        x_val=one(data.x_val),
        x_test=one(data.x_test),
        image_size=size,
    )


def relabelled(data: DataSplits, labels: tuple[int, ...]) -> DataSplits:
    """Only the images of `labels`, in every split, relabelled 0..k−1 in their order.

    A held-out task from the same data set (digits 5–9 after pretraining on 0–4).
    """
    if max(labels) >= data.num_classes:
        raise CaatError(f"labels: {data.name} has classes 0 to {data.num_classes - 1}")
    lookup = torch.full((data.num_classes,), -1, dtype=torch.long)
    lookup[torch.tensor(labels)] = torch.arange(len(labels))

    def kept(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        new = lookup[y]
        keep = new >= 0
        return x[keep], new[keep]

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (
        kept(data.x_train, data.y_train),
        kept(data.x_val, data.y_val),
        kept(data.x_test, data.y_test),
    )
    return dataclasses.replace(
        data,
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        num_classes=len(labels),
    )


def load_dataset(
    name: str,
    *,
    root: Path | None = None,
    download: bool = True,
    image_size: int | None = None,
    labels: tuple[int, ...] | None = None,
) -> DataSplits:
    """Load a data set with fixed train/val/test splits that no run seed changes.

    `image_size`: decode image files at that side (CUB, Dogs, ImageFolder; default
    224), or resample a data set of fixed size (digits, MNIST, CIFAR) to it. `labels`:
    keep only those classes, relabelled 0..k−1 (`relabelled`).
    """
    entry = DATASETS[name]
    folder = data_folder(entry, root)
    if entry.image_size is not None:
        size = image_size or entry.image_size
        data: DataSplits = entry.load()(entry, folder, download, size)
    else:
        data = entry.load()(entry, folder, download)
        if image_size not in (None, data.image_size):
            data = resized(data, image_size)
    return data if labels is None else relabelled(data, labels)


def load_for_run(config: RunConfig) -> DataSplits:
    """A run's data: its data set from its folder, at its image size."""
    root = Path(config.data_dir) if config.data_dir else None
    return load_dataset(
        config.dataset,
        root=root,
        download=config.download,
        image_size=config.image_size,
        labels=config.labels,
    )


def ensure_available(name: str, *, root: Path | None = None, download: bool = True) -> None:
    """Fail fast, before a run is recorded, when a data set can be neither read nor fetched."""
    entry = DATASETS[name]
    if entry.check:
        load(entry.check)(entry, data_folder(entry, root), download)


def stratified_split(
    labels: np.ndarray, test_size: float | int, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    keep, held = train_test_split(idx, test_size=test_size, stratify=labels, random_state=seed)
    return np.sort(keep), np.sort(held)
