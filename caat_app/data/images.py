"""Image files → whole uint8 tensors at one size, with a decoded cache next to the files.

Data sets that come as folders of JPEGs (CUB-200-2011, Stanford Dogs, any ImageFolder
tree) are decoded once per image size: every image is converted to RGB, its shorter
side resized to the size (bicubic, as timm's transforms for ViT and Swin) and the
centre cropped square. Decoding CUB takes minutes on one core, so the result is kept
in ``caat-<size>.pt`` in the data set's folder, keyed by a fingerprint of the file list
(paths, labels, sizes, modification times): any change to the files rebuilds it.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tarfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from caat_app.data.registry import Dataset
from caat_app.data.splits import DataSplits, DataUnavailable, stratified_split

VAL_FRACTION = 0.1
"""Share of the official training split held out, stratified, as the validation split."""
CACHE_VERSION = 1


@dataclass(frozen=True)
class Listing:
    """What a data set's files say: (relative path, 0-based label) per official split.

    `val` is a validation split the files name themselves (an ImageFolder tree's
    ``val/``); None: one is held out of `train`.
    """

    title: str
    base: Path  # the folder the relative paths start from
    classes: int
    train: tuple[tuple[str, int], ...]
    test: tuple[tuple[str, int], ...]
    val: tuple[tuple[str, int], ...] | None = None

    def splits(self) -> dict[str, tuple[tuple[str, int], ...]]:
        named = {"train": self.train, "test": self.test}
        return named if self.val is None else {**named, "val": self.val}


def extract(archive: Path, folder: Path) -> None:
    """Unpack an official archive into `folder`, whole or not at all.

    Unpacked beside the files first, then moved into place, so an interrupted unpacking
    never leaves a half tree that looks complete. Only plain files and folders inside
    `folder` are written (tarfile's `data` filter).
    """
    scratch = folder / f".caat-extract-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(scratch, filter="data")
        for item in sorted(scratch.iterdir()):
            if not (folder / item.name).exists():
                item.rename(folder / item.name)
    except (OSError, tarfile.TarError) as exc:
        raise DataUnavailable(f"cannot unpack {archive}: {exc}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def fingerprint(listing: Listing, size: int) -> str:
    """A digest of what the decoded tensors depend on; any change to the files changes it."""
    digest = hashlib.sha256(f"v{CACHE_VERSION} {size} {listing.classes}".encode())
    for split, items in listing.splits().items():
        digest.update(f"\n{split}".encode())
        for rel, label in items:
            path = listing.base / rel
            try:
                stat = path.stat()
            except OSError:
                raise DataUnavailable(
                    f"{listing.title}: {path} is listed but missing ({len(items)} images "
                    f"in the {split} split; are all files unpacked?)"
                ) from None
            digest.update(f"\n{rel}\t{label}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def decode(path: Path, size: int) -> np.ndarray:
    """One image as uint8 (3, size, size): RGB, shorter side to `size`, centre crop."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataUnavailable(f"cannot read image {path}: {exc}") from None
    w, h = rgb.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    rgb = rgb.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = round((nw - size) / 2), round((nh - size) / 2)  # torchvision's centre crop
    rgb = rgb.crop((left, top, left + size, top + size))
    return np.array(rgb, dtype=np.uint8).transpose(2, 0, 1)  # a writable copy


def decode_all(base: Path, rels: Sequence[str], size: int) -> Tensor:
    """Every image as one uint8 (N, 3, size, size) tensor; PIL decodes outside the GIL."""
    out = torch.empty((len(rels), 3, size, size), dtype=torch.uint8)
    workers = max(1, min(16, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        for i, pixels in enumerate(pool.map(lambda r: decode(base / r, size), rels)):
            out[i] = torch.from_numpy(pixels)
    return out


def _read_cache(path: Path, key: str) -> dict[str, Tensor] | None:
    """The cached tensors when the file is there, readable and of these files; else None."""
    try:
        cached = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # absent, truncated or not ours: decode again
        return None
    if not isinstance(cached, dict) or cached.get("fingerprint") != key:
        return None
    return {k: v for k, v in cached.items() if isinstance(v, Tensor)}


def _write_cache(path: Path, key: str, tensors: dict[str, Tensor]) -> None:
    """Save atomically; a folder that cannot be written to only costs the next decode."""
    scratch = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        torch.save({"fingerprint": key, **tensors}, scratch)
        os.replace(scratch, path)
    except OSError:
        scratch.unlink(missing_ok=True)


def decoded(listing: Listing, size: int, cache: Path) -> dict[str, Tensor]:
    """Per split: uint8 images `x_<split>` and int64 labels `y_<split>`, cached in `cache`."""
    key = fingerprint(listing, size)
    found = _read_cache(cache, key)
    if found is not None:
        return found
    tensors: dict[str, Tensor] = {}
    for split, items in listing.splits().items():
        tensors[f"x_{split}"] = decode_all(listing.base, [rel for rel, _ in items], size)
        tensors[f"y_{split}"] = torch.tensor([label for _, label in items], dtype=torch.int64)
    _write_cache(cache, key, tensors)
    return tensors


def held_out(listing: Listing, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation positions: a fixed stratified tenth of the training split.

    At least one image per class is held out, and each class must keep one to train on.
    """
    counts = np.bincount(labels, minlength=listing.classes)
    present = counts[counts > 0]
    if present.size and present.min() < 2:
        label = int(np.flatnonzero(counts == 1)[0])
        raise DataUnavailable(
            f"{listing.title} in {listing.base}: class {label} has one training image; "
            "a stratified validation split needs at least two per class"
        )
    n_val = max(math.ceil(VAL_FRACTION * len(labels)), len(present))
    return stratified_split(labels, n_val)


def to_splits(entry: Dataset, listing: Listing, size: int, cache: Path) -> DataSplits:
    """The decoded official splits as float tensors in [0, 1], validation held out."""
    t = decoded(listing, size, cache)
    x_train, y_train = t["x_train"], t["y_train"]
    if listing.val is None:
        keep, held = held_out(listing, y_train.numpy())
        keep_t, held_t = torch.from_numpy(keep), torch.from_numpy(held)
        x_val, y_val = x_train[held_t], y_train[held_t]
        x_train, y_train = x_train[keep_t], y_train[keep_t]
    else:
        x_val, y_val = t["x_val"], t["y_val"]
    assert entry.stats is not None
    mean, std = entry.stats
    return DataSplits(
        name=entry.name,
        x_train=x_train.float().div_(255.0),
        y_train=y_train,
        x_val=x_val.float().div_(255.0),
        y_val=y_val,
        x_test=t["x_test"].float().div_(255.0),
        y_test=t["y_test"],
        num_classes=listing.classes,
        in_channels=3,
        image_size=size,
        mean=mean,
        std=std,
    )
