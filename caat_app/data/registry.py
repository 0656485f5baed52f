"""The data set registry: every data set a run can train on, with what caat needs to know.

Add a data set: one entry here (its loader, classes, the budget its trade-off shows at,
its augmentation) and its tests on a small tree the test makes (tests/test_data.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from caat_app.registry import Entry, Registry

_CIFAR_AUGMENT = {"flip": True, "translate": 4, "rotate_deg": 15.0}


@dataclass(frozen=True)
class Dataset(Entry):
    """A data set; `impl` names its loader `(entry, folder, download) -> DataSplits`."""

    title: str = ""
    classes: int = 10
    # Config defaults it brings: the budget at which the trade-off shows on it.
    defaults: Mapping[str, Any] = field(default_factory=dict)
    augment: Mapping[str, Any] | None = None  # None: no augmentation by default
    # Per-channel (mean, std) of the official training set; None: from the training split.
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    source: str = ""  # the torchvision class; "" when it ships with caat
    # Checks, before a run is recorded, that its files are there or can be fetched.
    check: str = ""
    fill: str = ""  # how to fill its folder by hand ({folder}: where the files go)


_VISION = "caat_app.data.vision:load"
_VISION_CHECK = "caat_app.data.vision:ensure"
_CIFAR_FILL = "put {archive} (https://www.cs.toronto.edu/~kriz/cifar.html) there"

DATASETS: Registry[Dataset] = Registry(
    "data set",
    [
        Dataset(
            "digits",
            "scikit-learn's 8×8 handwritten digits, embedded",
            "caat_app.data.digits:load",
            title="digits",
            defaults={"eps": 0.3},
        ),
        Dataset(
            "mnist",
            "MNIST through torchvision",
            _VISION,
            title="MNIST",
            defaults={"eps": 0.3},
            augment={"flip": False, "translate": 2, "rotate_deg": 10.0},
            stats=((0.1307,), (0.3081,)),
            source="MNIST",
            check=_VISION_CHECK,
            fill=(
                "put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz "
                "(https://ossci-datasets.s3.amazonaws.com/mnist/) in {folder}/MNIST/raw"
            ),
        ),
        Dataset(
            "cifar10",
            "CIFAR-10 through torchvision",
            _VISION,
            title="CIFAR-10",
            defaults={"eps": 8 / 255, "alpha": 2 / 255},
            augment=_CIFAR_AUGMENT,
            stats=((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
            source="CIFAR10",
            check=_VISION_CHECK,
            fill=_CIFAR_FILL.replace("{archive}", "cifar-10-python.tar.gz"),
        ),
        Dataset(
            "cifar100",
            "CIFAR-100 through torchvision",
            _VISION,
            title="CIFAR-100",
            classes=100,
            defaults={"eps": 8 / 255, "alpha": 2 / 255},
            augment=_CIFAR_AUGMENT,
            stats=((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
            source="CIFAR100",
            check=_VISION_CHECK,
            fill=_CIFAR_FILL.replace("{archive}", "cifar-100-python.tar.gz"),
        ),
    ],
)

AUGMENT: dict[str, Mapping[str, Any] | None] = {n: d.augment for n, d in DATASETS.items()}
"""Each data set's default augmentation (None: none), as the trainer applies it."""
