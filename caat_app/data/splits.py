"""Data sets as whole tensors in [0, 1] with fixed splits, loaded by their registry name.

No DataLoader: batches are index slices of tensors that live on the device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

from caat_app.data.registry import DATASETS
from caat_app.errors import CaatError
from caat_app.registry import load

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


def _folder(name: str, root: Path | None) -> Path:
    return (Path(root).expanduser() if root is not None else default_data_root()) / name


def load_dataset(name: str, *, root: Path | None = None, download: bool = True) -> DataSplits:
    """Load a data set with fixed train/val/test splits that no run seed changes."""
    entry = DATASETS[name]
    return entry.load()(entry, _folder(name, root), download)  # type: ignore[no-any-return]


def ensure_available(name: str, *, root: Path | None = None, download: bool = True) -> None:
    """Fail fast, before a run is recorded, when a data set can be neither read nor fetched."""
    entry = DATASETS[name]
    if entry.check:
        load(entry.check)(entry, _folder(name, root), download)


def stratified_split(
    labels: np.ndarray, test_size: float | int, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    keep, held = train_test_split(idx, test_size=test_size, stratify=labels, random_state=seed)
    return np.sort(keep), np.sort(held)
