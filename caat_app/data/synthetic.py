"""synthetic-cifar: CIFAR-10's shapes without CIFAR-10's files, for checks that need no data.

A GPU check or a speed benchmark on a machine without data sets still wants the real
work: 3×32×32 images in [0, 1], 10 classes, CIFAR-10's 50 000 / 10 000 images and its
stratified validation split. Each class is a fixed random low-frequency colour pattern;
an image is its class's pattern plus a random low-frequency nuisance of its own and
white noise, clipped to [0, 1]. A model learns it in a few hundred steps, and at
ε = 8/255 the patterns (about 0.25 apart per pixel) leave room for robustness, so an
attack has points to work on. Generated from a seed on the fly, identical every time.

Its numbers say nothing about CIFAR-10: the name says synthetic wherever it is shown.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from caat_app.data.registry import Dataset
from caat_app.data.splits import DataSplits, stratified_split

SEED = 0
SIZE = 32
CHANNELS = 3
CLASSES = 10
COARSE = 4  # fields are drawn on a 4×4 grid and upsampled: low frequency only
PATTERN = 0.25  # the class pattern's per-pixel standard deviation
NUISANCE = 0.15  # the image's own low-frequency field (before upsampling smooths it)
NOISE = 0.08  # white noise per pixel
FULL = (50_000, 10_000)
"""CIFAR-10's training and test counts; a tenth of training is held out for validation."""
TINY = (1_000, 200)
"""synthetic-cifar-tiny: the same images, few enough for a CPU check in seconds."""
_CHUNK = 8192
_STATS_SAMPLE = 4096  # the channels' mean and std, from the first training images


def _upsampling() -> Tensor:
    """(SIZE, COARSE): bilinear upsampling along one axis as a matrix, so that upsampling a
    batch of fields is two matrix products (several times faster than `F.interpolate`)."""
    eye = torch.eye(COARSE).view(COARSE, 1, COARSE)
    return F.interpolate(eye, size=SIZE, mode="linear", align_corners=False).view(COARSE, SIZE).T


def _low_frequency(n: int, gen: torch.Generator) -> Tensor:
    """`n` random colour fields, drawn on a coarse grid and upsampled bilinearly to SIZE×SIZE."""
    coarse = torch.randn((n, CHANNELS, COARSE, COARSE), generator=gen)
    up = _upsampling()
    return up @ coarse @ up.T


def class_patterns(seed: int = SEED) -> Tensor:
    """The classes' patterns, (CLASSES, 3, SIZE, SIZE), each of unit standard deviation."""
    gen = torch.Generator().manual_seed(seed)
    fields = _low_frequency(CLASSES, gen)
    return fields / fields.flatten(1).std(dim=1).view(-1, 1, 1, 1)


def _balanced_labels(n: int, gen: torch.Generator) -> Tensor:
    """`n` labels, every class as often as `n` allows, in a random order."""
    labels = torch.arange(n, dtype=torch.int64) % CLASSES
    return labels[torch.randperm(n, generator=gen)]


def _images(patterns: Tensor, labels: Tensor, gen: torch.Generator) -> Tensor:
    """Images of the given labels, built in chunks so that only the result is held whole."""
    out = torch.empty((len(labels), CHANNELS, SIZE, SIZE))
    for start in range(0, len(labels), _CHUNK):
        y = labels[start : start + _CHUNK]
        x = out[start : start + _CHUNK]  # a view: filled in place, no temporaries
        torch.randn(x.shape, generator=gen, out=x).mul_(NOISE)
        x.add_(patterns[y], alpha=PATTERN).add_(_low_frequency(len(y), gen), alpha=NUISANCE)
        x.add_(0.5).clamp_(0.0, 1.0)
    return out


def synthetic_cifar(
    train: int = FULL[0], test: int = FULL[1], *, seed: int = SEED, name: str = "synthetic-cifar"
) -> DataSplits:
    """`train` images less a stratified tenth held out for validation, and `test` images.

    The same seed gives the same tensors; the test images are drawn after the training
    ones from the same stream, with the same class patterns.
    """
    if train < 10 * CLASSES or test < CLASSES:
        raise ValueError(
            f"synthetic-cifar needs ≥ {10 * CLASSES} training, ≥ {CLASSES} test images"
        )
    patterns = class_patterns(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    y_all = _balanced_labels(train, gen)
    x_all = _images(patterns, y_all, gen)
    y_test = _balanced_labels(test, gen)
    x_test = _images(patterns, y_test, gen)
    keep, held = stratified_split(y_all.numpy(), train // 10)
    x_train = x_all[keep]
    sample = x_train[:_STATS_SAMPLE].transpose(0, 1).reshape(CHANNELS, -1)
    mean = tuple(float(v) for v in sample.mean(dim=1))
    std = tuple(float(v) for v in sample.std(dim=1))
    return DataSplits(
        name=name,
        x_train=x_train,
        y_train=y_all[keep],
        x_val=x_all[held],
        y_val=y_all[held],
        x_test=x_test,
        y_test=y_test,
        num_classes=CLASSES,
        in_channels=CHANNELS,
        image_size=SIZE,
        mean=mean,
        std=std,
    )


def load(entry: Dataset, folder: Path, download: bool) -> DataSplits:
    """CIFAR-10's counts; no folder is read and nothing is downloaded."""
    del folder, download
    return synthetic_cifar(*FULL, name=entry.name)


def load_tiny(entry: Dataset, folder: Path, download: bool) -> DataSplits:
    """The tiny counts (`TINY`), for checks on a CPU."""
    del folder, download
    return synthetic_cifar(*TINY, name=entry.name)
