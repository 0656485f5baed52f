"""The data set registry: every data set a run can train on, with what caat needs to know.

Add a data set: one entry here (its loader, classes, the budget its trade-off shows at,
its augmentation) and its tests on a small tree the test makes (tests/test_data.py,
tests/test_finegrained_data.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from caat_app.registry import Entry, Registry

_CIFAR_AUGMENT = {"flip": True, "translate": 4, "rotate_deg": 15.0}
# The paper's crop, flip and rotation at CIFAR's proportions (a shift of up to 1/8 of the
# side, 4 px at 32, 28 px at 224), so it scales with the run's --image-size.
_PHOTO_AUGMENT = {"flip": True, "translate": 0, "translate_frac": 0.125, "rotate_deg": 15.0}
_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class Dataset(Entry):
    """A data set; `impl` names its loader `(entry, folder, download) -> DataSplits`.

    A data set of image files decoded at a chosen size (`image_size` set) has the loader
    `(entry, folder, download, size) -> DataSplits`.
    """

    title: str = ""
    classes: int = 10  # 0: as many as its files name (the loader's DataSplits says)
    # Config defaults it brings: the budget at which the trade-off shows on it.
    defaults: Mapping[str, Any] = field(default_factory=dict)
    augment: Mapping[str, Any] | None = None  # None: no augmentation by default
    # Per-channel (mean, std) of the official training set; None: from the training split.
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    # The torchvision class, or the file layout the person puts in place; "" when it
    # ships with caat.
    source: str = ""
    # Checks, before a run is recorded, that its files are there or can be fetched.
    check: str = ""
    fill: str = ""  # how to fill its folder by hand ({folder}: where the files go)
    # The side images are decoded at unless the run sets --image-size; None: the files'.
    image_size: int | None = None
    # --data-dir names this data set's own folder, not a root with one folder per data set.
    own_dir: bool = False


_VISION = "caat_app.data.vision:load"
_VISION_CHECK = "caat_app.data.vision:ensure"
_CIFAR_FILL = "put {archive} (https://www.cs.toronto.edu/~kriz/cifar.html) there"
_FINEGRAINED = "caat_app.data.finegrained:load"
_FINEGRAINED_CHECK = "caat_app.data.finegrained:ensure"
# The budget of the paper's attack from scratch (PGD, 8/255, step 2/255); its PEFT
# appendix, which would give the fine-tuning attack, is not available.
_PEFT_DEFAULTS = {"eps": 8 / 255, "alpha": 2 / 255}
_CIFAR_DEFAULTS = {"eps": 8 / 255, "alpha": 2 / 255}

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
        Dataset(
            "cub200",
            "CUB-200-2011 birds (official split), from its archive or folder",
            _FINEGRAINED,
            title="CUB-200-2011",
            classes=200,
            defaults=_PEFT_DEFAULTS,
            augment=_PHOTO_AUGMENT,
            stats=_IMAGENET_STATS,
            source="CUB_200_2011",
            check=_FINEGRAINED_CHECK,
            fill=(
                "put CUB_200_2011.tgz (https://www.vision.caltech.edu/datasets/cub_200_2011/) "
                "there, or its extracted CUB_200_2011/ folder (images/, images.txt, "
                "image_class_labels.txt, train_test_split.txt, classes.txt)"
            ),
            image_size=224,
        ),
        Dataset(
            "dogs",
            "Stanford Dogs (official split), from its archives or folders",
            _FINEGRAINED,
            title="Stanford Dogs",
            classes=120,
            defaults=_PEFT_DEFAULTS,
            augment=_PHOTO_AUGMENT,
            stats=_IMAGENET_STATS,
            source="StanfordDogs",
            check=_FINEGRAINED_CHECK,
            fill=(
                "put images.tar and lists.tar (http://vision.stanford.edu/aditya86/ImageNetDogs/) "
                "there, or their extracted Images/ folder and train_list.mat and test_list.mat "
                "(in the folder or in lists/)"
            ),
            image_size=224,
        ),
        Dataset(
            "imagefolder",
            "any ImageFolder tree named by --data-dir (train/, test/, optional val/)",
            _FINEGRAINED,
            title="ImageFolder tree",
            classes=0,  # as many as train/ has class folders
            defaults=_PEFT_DEFAULTS,
            augment=_PHOTO_AUGMENT,
            stats=_IMAGENET_STATS,
            source="ImageFolder",
            check=_FINEGRAINED_CHECK,
            fill=(
                "give --data-dir a folder with train/<class>/<image> and test/<class>/<image> "
                "(and val/<class>/<image>, else a tenth of train/ is held out)"
            ),
            image_size=224,
            own_dir=True,
        ),
        Dataset(
            "synthetic-cifar",
            "synthetic CIFAR-shaped images (3×32×32, 10 classes, 50 000 / 10 000), generated "
            "from a seed: no files, no download; for checks and benchmarks, not results",
            "caat_app.data.synthetic:load",
            title="synthetic CIFAR-shaped data (not CIFAR-10)",
            defaults=_CIFAR_DEFAULTS,
            augment=_CIFAR_AUGMENT,
        ),
        Dataset(
            "synthetic-cifar-tiny",
            "synthetic-cifar at 1 000 training and 200 test images, for checks on a CPU",
            "caat_app.data.synthetic:load_tiny",
            title="synthetic CIFAR-shaped data, tiny (not CIFAR-10)",
            defaults=_CIFAR_DEFAULTS,
            augment=_CIFAR_AUGMENT,
        ),
    ],
)

AUGMENT: dict[str, Mapping[str, Any] | None] = {n: d.augment for n, d in DATASETS.items()}
"""Each data set's default augmentation (None: none), as the trainer applies it."""
