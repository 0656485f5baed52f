"""CUB-200-2011, Stanford Dogs and ImageFolder trees, read from tiny trees in their layouts.

Every image is one flat colour that encodes it: red says which image (its id), green
its class. A decoded image's mean colour therefore tells which file landed in which
split with which label, whatever the resizing did to its edges.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli
from PIL import Image

from caat_app.config import build_config, command_line
from caat_app.data.augment import augment
from caat_app.data.splits import DataSplits, DataUnavailable, ensure_available, load_dataset
from caat_app.errors import ConfigError
from caat_storage import RunStatus, Store

CLASSES = 3
PER_CLASS = 6
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _write_image(path: Path, image_id: int, label: int) -> None:
    """A 40×30 flat image: red = 8 + 12·id, green = 40 + 60·label."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = (8 + 12 * image_id, 40 + 60 * label, 128)
    Image.new("RGB", (40, 30), colour).save(path, quality=95)


def _ids_and_labels(x: torch.Tensor) -> tuple[list[int], list[int]]:
    """Which image (id) and class each decoded image shows, from its mean colour."""
    mean = (x.mean(dim=(2, 3)) * 255).round()
    ids = ((mean[:, 0] - 8) / 12).round().long().tolist()
    labels = ((mean[:, 1] - 40) / 60).round().long().tolist()
    return ids, labels


def _check_splits(data: DataSplits, train: set[int], test: set[int], size: int) -> None:
    """Shapes, range, labels that match the images, and the official split by id."""
    seen = {}
    for split in ("train", "val", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (3, size, size) and len(x) == len(y)
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        ids, labels = _ids_and_labels(x)
        assert labels == y.tolist()  # 0-based, and each image's own
        seen[split] = ids
    assert set(seen["train"]).isdisjoint(seen["val"])
    assert sorted(seen["train"] + seen["val"]) == sorted(train)
    assert sorted(seen["test"]) == sorted(test)
    # Stratified: a tenth of train, at least one image of every class, held out.
    assert sorted(data.y_val.tolist()) == list(range(CLASSES))
    assert (data.num_classes, data.in_channels, data.image_size) == (CLASSES, 3, size)
    assert (data.mean, data.std) == IMAGENET


# --------------------------------------------------------------------------- CUB


def _cub_tree(folder: Path, train_flags: dict[int, int]) -> None:
    """`folder/CUB_200_2011/` as in the official archive; lines in a shuffled order."""
    root = folder / "CUB_200_2011"
    images, labels, split = [], [], []
    for image_id, is_train in train_flags.items():
        label = (image_id - 1) // PER_CLASS
        rel = f"{label + 1:03d}.Bird_{label}/Bird_{label}_{image_id:04d}.jpg"
        _write_image(root / "images" / rel, image_id, label)
        images.append(f"{image_id} {rel}")
        labels.append(f"{image_id} {label + 1}")
        split.append(f"{image_id} {is_train}")
    order = np.random.default_rng(0).permutation(len(images))
    for name, lines in (
        ("images.txt", images),
        ("image_class_labels.txt", labels),
        ("train_test_split.txt", split),
    ):
        (root / name).write_text("".join(lines[i] + "\n" for i in order))
    names = "".join(f"{c + 1} {c + 1:03d}.Bird_{c}\n" for c in range(CLASSES))
    (root / "classes.txt").write_text(names)


def _flags() -> dict[int, int]:
    """An irregular official split: four training images per class, two test images."""
    rng = np.random.default_rng(1)
    flags = {}
    for c in range(CLASSES):
        ids = list(range(c * PER_CLASS + 1, (c + 1) * PER_CLASS + 1))
        test = set(rng.choice(ids, 2, replace=False).tolist())
        flags.update({i: int(i not in test) for i in ids})
    return flags


@pytest.fixture
def cub(tmp_path: Path) -> tuple[Path, dict[int, int]]:
    flags = _flags()
    _cub_tree(tmp_path / "cub200", flags)
    return tmp_path, flags


def test_cub_follows_the_official_split(cub: tuple[Path, dict[int, int]]) -> None:
    root, flags = cub
    data = load_dataset("cub200", root=root, image_size=16)
    train = {i for i, f in flags.items() if f == 1}
    _check_splits(data, train, set(flags) - train, 16)


def test_cub_from_its_archive(tmp_path: Path) -> None:
    flags = _flags()
    _cub_tree(tmp_path / "made", flags)
    folder = tmp_path / "data" / "cub200"
    folder.mkdir(parents=True)
    with tarfile.open(folder / "CUB_200_2011.tgz", "w:gz") as tar:
        tar.add(tmp_path / "made" / "CUB_200_2011", arcname="CUB_200_2011")
    data = load_dataset("cub200", root=tmp_path / "data", image_size=8)
    train = {i for i, f in flags.items() if f == 1}
    _check_splits(data, train, set(flags) - train, 8)
    assert (folder / "CUB_200_2011" / "images.txt").is_file()  # unpacked once, beside it


def _replace_id(path: Path, image_id: int, new: str) -> None:
    """The line of `image_id` replaced by `new` (gone when empty)."""
    lines = path.read_text().splitlines()
    kept = [new if line.split()[0] == str(image_id) else line for line in lines]
    path.write_text("".join(line + "\n" for line in kept if line))


BROKEN_CUB = [
    ("train_test_split.txt", 5, "5 maybe", "id 5: expected an integer from 0 to 1"),
    ("train_test_split.txt", 5, "five 1", "line"),
    ("train_test_split.txt", 5, "", "different ids (e.g. 5)"),
    ("image_class_labels.txt", 5, "5 9", "from 1 to 3"),
    ("images.txt", 5, "5 001.Bird_0/gone.jpg", "gone.jpg is listed but missing"),
    ("classes.txt", 2, "7 002.Bird_1", "1, 2, 3"),
]


@pytest.mark.parametrize(("name", "image_id", "new", "says"), BROKEN_CUB)
def test_a_broken_cub_file_is_one_line(
    cub: tuple[Path, dict[int, int]], name: str, image_id: int, new: str, says: str
) -> None:
    root, _ = cub
    path = root / "cub200" / "CUB_200_2011" / name
    _replace_id(path, image_id, new)
    for attempt in (ensure_available, load_dataset):
        with pytest.raises(DataUnavailable) as info:
            attempt("cub200", root=root)
        message = str(info.value)
        assert "\n" not in message and says in message
        assert str(path.parent) in message


# --------------------------------------------------------------------------- Stanford Dogs


def _mat(path: Path, files: list[str], labels: list[int]) -> None:
    """A list in the official structure: cells file_list, annotation_list; labels N×1."""
    from scipy.io import savemat

    cells = np.empty((len(files), 1), dtype=object)
    notes = np.empty((len(files), 1), dtype=object)
    for i, f in enumerate(files):
        cells[i, 0], notes[i, 0] = f, f.removesuffix(".jpg")
    path.parent.mkdir(parents=True, exist_ok=True)
    column = np.asarray(labels, dtype=np.float64).reshape(-1, 1)
    savemat(str(path), {"file_list": cells, "annotation_list": notes, "labels": column})


def _dogs_tree(folder: Path, lists: Path) -> tuple[set[int], set[int]]:
    """`Images/<wnid-breed>/<file>.jpg` and train_list.mat, test_list.mat in `lists`."""
    split: dict[str, tuple[list[str], list[int]]] = {"train": ([], []), "test": ([], [])}
    ids: dict[str, set[int]] = {"train": set(), "test": set()}
    for image_id, is_train in _flags().items():
        label = (image_id - 1) // PER_CLASS
        wnid = f"n0208{label:04d}"
        rel = f"{wnid}-Breed_{label}/{wnid}_{image_id}.jpg"
        _write_image(folder / "Images" / rel, image_id, label)
        which = "train" if is_train else "test"
        split[which][0].append(rel)
        split[which][1].append(label + 1)
        ids[which].add(image_id)
    for which, (files, labels) in split.items():
        _mat(lists / f"{which}_list.mat", files, labels)
    return ids["train"], ids["test"]


@pytest.mark.parametrize("in_lists", [True, False], ids=["lists-folder", "beside-Images"])
def test_dogs_follow_the_official_lists(tmp_path: Path, in_lists: bool) -> None:
    folder = tmp_path / "dogs"
    train, test = _dogs_tree(folder, folder / "lists" if in_lists else folder)
    data = load_dataset("dogs", root=tmp_path, image_size=16)
    _check_splits(data, train, test, 16)


def test_dogs_from_their_archives(tmp_path: Path) -> None:
    made = tmp_path / "made"
    train, test = _dogs_tree(made, made)
    folder = tmp_path / "data" / "dogs"
    folder.mkdir(parents=True)
    with tarfile.open(folder / "images.tar", "w") as tar:
        tar.add(made / "Images", arcname="Images")
    with tarfile.open(folder / "lists.tar", "w") as tar:
        for name in ("train_list.mat", "test_list.mat"):
            tar.add(made / name, arcname=name)
    _check_splits(load_dataset("dogs", root=tmp_path / "data", image_size=16), train, test, 16)


def test_broken_dogs_lists_are_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "dogs"
    _dogs_tree(folder, folder / "lists")
    train_list = folder / "lists" / "train_list.mat"
    train_list.write_bytes(b"not a MATLAB file at all")
    with pytest.raises(DataUnavailable) as info:
        ensure_available("dogs", root=tmp_path)
    assert "\n" not in str(info.value) and str(train_list) in str(info.value)
    _mat(train_list, ["n02080000-Breed_0/a.jpg", "n02080001-Breed_1/b.jpg"], [1])
    with pytest.raises(DataUnavailable, match="2 files but 1 labels") as info:
        load_dataset("dogs", root=tmp_path)
    assert "\n" not in str(info.value)
    _mat(train_list, ["n02080000-Breed_0/a.jpg", "n02080001-Breed_1/b.jpg"], [1, 1])
    with pytest.raises(DataUnavailable, match="label 1 to several breed folders"):
        load_dataset("dogs", root=tmp_path)


# --------------------------------------------------------------------------- ImageFolder


def _imagefolder(root: Path, splits: dict[str, int]) -> dict[str, set[int]]:
    """`root/<split>/<class>/*.png`, `count` images per class; the ids in each split."""
    ids: dict[str, set[int]] = {}
    image_id = 0
    for split, count in splits.items():
        ids[split] = set()
        for label, name in enumerate(["albatross", "bunting", "crow"]):  # sorted: 0, 1, 2
            for _ in range(count):
                image_id += 1
                _write_image(root / split / name / f"{image_id}.png", image_id, label)
                ids[split].add(image_id)
    return ids


def test_imagefolder_tree(tmp_path: Path) -> None:
    tree = tmp_path / "birds"
    ids = _imagefolder(tree, {"train": 4, "test": 2})
    (tree / "train" / "crow" / "notes.txt").write_text("not an image")
    data = load_dataset("imagefolder", root=tree, image_size=16)
    _check_splits(data, ids["train"], ids["test"], 16)


def test_imagefolder_val_folder_is_the_validation_split(tmp_path: Path) -> None:
    tree = tmp_path / "birds"
    ids = _imagefolder(tree, {"train": 3, "val": 1, "test": 2})
    data = load_dataset("imagefolder", root=tree, image_size=8)
    assert sorted(_ids_and_labels(data.x_train)[0]) == sorted(ids["train"])
    assert sorted(_ids_and_labels(data.x_val)[0]) == sorted(ids["val"])
    assert sorted(_ids_and_labels(data.x_test)[0]) == sorted(ids["test"])


def test_decoding_matches_torchvision_resize_and_centre_crop(tmp_path: Path) -> None:
    from torchvision import transforms

    tree = tmp_path / "tree"
    rng = np.random.default_rng(3)
    for split in ("train", "test"):
        for name in ("a", "b"):
            for k in range(2):
                pixels = rng.integers(0, 256, (30, 40), dtype=np.uint8)  # grey: RGB converts
                (tree / split / name).mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(tree / split / name / f"{k}.png")
    data = load_dataset("imagefolder", root=tree, image_size=16)
    reference = transforms.Compose(
        [
            transforms.Resize(16, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(16),
            transforms.PILToTensor(),
        ]
    )
    files = sorted((tree / "test").rglob("*.png"))
    expected = torch.stack([reference(Image.open(f).convert("RGB")) for f in files])
    assert torch.equal((data.x_test * 255).round().to(torch.uint8), expected)


def test_a_test_class_missing_from_train_is_one_line(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    _imagefolder(tree, {"train": 2, "test": 1})
    _write_image(tree / "test" / "dodo" / "x.png", 1, 0)
    with pytest.raises(DataUnavailable) as info:
        load_dataset("imagefolder", root=tree, image_size=8)
    assert "\n" not in str(info.value) and str(tree / "test" / "dodo") in str(info.value)


# --------------------------------------------------------------------------- missing files


MISSING = [
    ("cub200", "cub200", "CUB_200_2011.tgz"),
    ("dogs", "dogs", "train_list.mat"),
    ("imagefolder", "", "train/<class>/<image>"),
]


@pytest.mark.parametrize(("name", "sub", "names"), MISSING)
def test_missing_files_are_one_line_naming_the_folder(
    tmp_path: Path, name: str, sub: str, names: str
) -> None:
    for attempt in (ensure_available, load_dataset):
        with pytest.raises(DataUnavailable) as info:
            attempt(name, root=tmp_path)
        message = str(info.value)
        assert "\n" not in message and names in message
        assert f"is not in {tmp_path / sub}:" in message


def test_train_without_the_files_is_one_line_before_anything_is_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "store" / "caat.db"
    code = run_cli("train", "--db", str(db), "--dataset", "cub200", "--data-dir", str(tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error:")
    assert str(tmp_path / "cub200") in err and "images.txt" in err
    assert not db.exists()


# --------------------------------------------------------------------------- the cache


def test_decoded_images_are_cached_per_size(cub: tuple[Path, dict[int, int]]) -> None:
    root, _ = cub
    first = load_dataset("cub200", root=root, image_size=16)
    assert (root / "cub200" / "caat-16.pt").is_file()
    # Spoil an image behind the cache's back (same length, same times): the cache answers.
    image = next((root / "cub200" / "CUB_200_2011" / "images").rglob("*.jpg"))
    stat = image.stat()
    image.write_bytes(b"x" * stat.st_size)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = load_dataset("cub200", root=root, image_size=16)
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.x_test, again.x_test)
    with pytest.raises(DataUnavailable, match="cannot read image"):  # no cache at this size
        load_dataset("cub200", root=root, image_size=12)


def test_a_changed_split_file_rebuilds_the_cache(cub: tuple[Path, dict[int, int]]) -> None:
    root, flags = cub
    load_dataset("cub200", root=root, image_size=16)
    moved = min(i for i, f in flags.items() if f == 1)
    _replace_id(root / "cub200" / "CUB_200_2011" / "train_test_split.txt", moved, f"{moved} 0")
    flags[moved] = 0
    train = {i for i, f in flags.items() if f == 1}
    _check_splits(load_dataset("cub200", root=root, image_size=16), train, set(flags) - train, 16)


def test_new_files_and_a_spoilt_cache_are_read_again(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    ids = _imagefolder(tree, {"train": 3, "test": 1})
    assert len(load_dataset("imagefolder", root=tree, image_size=8).y_test) == CLASSES
    _write_image(tree / "test" / "crow" / "extra.png", 19, 2)
    data = load_dataset("imagefolder", root=tree, image_size=8)
    assert sorted(_ids_and_labels(data.x_test)[0]) == sorted(ids["test"] | {19})
    (tree / "caat-8.pt").write_bytes(b"half a file")
    again = load_dataset("imagefolder", root=tree, image_size=8)
    assert torch.equal(again.x_test, data.x_test) and torch.equal(again.y_test, data.y_test)


# --------------------------------------------------------------------------- image size


def test_fixed_size_data_sets_are_resampled_bilinearly() -> None:
    native = load_dataset("digits")
    assert load_dataset("digits", image_size=8).x_train.equal(native.x_train)
    big = load_dataset("digits", image_size=16)
    assert big.x_train.shape == (len(native.y_train), 1, 16, 16) and big.image_size == 16
    assert big.y_train.equal(native.y_train) and big.y_test.equal(native.y_test)
    a = native.x_test[:, 0]
    # Doubling with half-pixel centres: output (1, 1) sits a quarter pixel into the
    # square of inputs (0..1, 0..1), output (0, 0) on input (0, 0) at the border.
    corner = 0.5625 * a[:, 0, 0] + 0.1875 * (a[:, 0, 1] + a[:, 1, 0]) + 0.0625 * a[:, 1, 1]
    assert torch.allclose(big.x_test[:, 0, 1, 1], corner, atol=1e-6)
    assert torch.allclose(big.x_test[:, 0, 0, 0], a[:, 0, 0], atol=1e-6)
    assert float(big.x_test.min()) >= 0.0 and float(big.x_test.max()) <= 1.0


def test_a_shift_as_a_share_of_the_side() -> None:
    x = torch.rand(16, 3, 24, 24)
    shared = {"flip": True, "rotate_deg": 0.0}
    by_share = augment(
        x, translate=0, translate_frac=0.125, **shared, generator=torch.Generator().manual_seed(5)
    )
    by_pixels = augment(x, translate=3, **shared, generator=torch.Generator().manual_seed(5))
    assert torch.equal(by_share, by_pixels)


@pytest.mark.parametrize("size", [4, 7, 1025])
def test_image_size_out_of_range_is_refused(size: int) -> None:
    with pytest.raises(ConfigError, match="image_size"):
        build_config({"image_size": size})


def test_image_size_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = build_config({"dataset": "cub200", "image_size": 16})
    assert "--image-size 16" in command_line(cfg)
    assert run_cli("train", "--db", str(tmp_path / "x.db"), "--image-size", "5") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "image_size" in err


@pytest.mark.slow
def test_train_on_a_tiny_cub_tree(
    cub: tuple[Path, dict[int, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = cub
    db = root / "store" / "caat.db"
    args = ["--dataset", "cub200", "--data-dir", str(root), "--image-size", "16"]
    assert run_cli("train", "--db", str(db), *args, "--model", "cnn", "--epochs", "1") == 0
    with Store.open(f"sqlite:///{db}") as store:
        (run,) = store.list_runs()
        assert run.status == RunStatus.FINISHED
    assert (root / "cub200" / "caat-16.pt").is_file()  # trained on 16×16 images
