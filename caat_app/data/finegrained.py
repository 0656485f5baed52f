"""CUB-200-2011, Stanford Dogs and any ImageFolder tree, read from their official layouts.

Each layout's files say which image is in which official split and with which label;
this module reads them (failing with one line on anything missing or malformed) and
hands the list to `images`, which decodes, caches and holds out the validation split.
The official archives may lie in the folder instead: they are unpacked on first use.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from caat_app.data.images import Listing, extract, fingerprint, to_splits
from caat_app.data.registry import Dataset
from caat_app.data.splits import DataSplits, DataUnavailable

CUB_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""torchvision ImageFolder's image extensions (compared in lower case)."""


def _missing(entry: Dataset, folder: Path) -> DataUnavailable:
    fill = entry.fill.replace("{folder}", str(folder))
    return DataUnavailable(" ".join(f"{entry.title} is not in {folder}: {fill}".split()))


def _broken(entry: Dataset, path: Path, problem: str) -> DataUnavailable:
    return DataUnavailable(" ".join(f"{entry.title}: {path} {problem}".split()))


# --------------------------------------------------------------------------- CUB-200-2011


def _table(entry: Dataset, path: Path) -> dict[int, str]:
    """A CUB list file: `<id> <value>` per line, ids unique."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise _broken(entry, path, f"cannot be read: {exc}") from None
    table: dict[int, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) in table:
            raise _broken(entry, path, f"line {number}: expected '<new id> <value>', got {line!r}")
        table[int(parts[0])] = parts[1].strip()
    return table


def _numbers(entry: Dataset, path: Path, table: dict[int, str], allowed: range) -> dict[int, int]:
    """A table's values as integers inside `allowed`."""
    out = {}
    for key, value in table.items():
        if not value.isdigit() or int(value) not in allowed:
            raise _broken(
                entry,
                path,
                f"id {key}: expected an integer from {allowed.start} to {allowed.stop - 1}, "
                f"got {value!r}",
            )
        out[key] = int(value)
    return out


def _cub(entry: Dataset, folder: Path) -> Listing:
    """`CUB_200_2011/`: images.txt, image_class_labels.txt, train_test_split.txt, classes.txt."""
    root = folder / "CUB_200_2011"
    archive = folder / "CUB_200_2011.tgz"
    if not (root / "images.txt").is_file() and archive.is_file():
        extract(archive, folder)
    if not (root / "images").is_dir() or not all((root / f).is_file() for f in CUB_FILES):
        raise _missing(entry, folder)
    paths = _table(entry, root / "images.txt")
    classes = _table(entry, root / "classes.txt")
    if sorted(classes) != list(range(1, len(classes) + 1)):
        raise _broken(entry, root / "classes.txt", "must number its classes 1, 2, 3, … in order")
    by_id = {
        "image_class_labels.txt": range(1, len(classes) + 1),
        "train_test_split.txt": range(2),
    }
    labels, is_train = (
        _numbers(entry, root / name, _table(entry, root / name), allowed)
        for name, allowed in by_id.items()
    )
    for name, table in (("image_class_labels.txt", labels), ("train_test_split.txt", is_train)):
        if set(table) != set(paths):
            odd = min(set(table) ^ set(paths))
            raise _broken(entry, root / name, f"and images.txt list different ids (e.g. {odd})")
    ids = sorted(paths)
    items = {i: ("images/" + paths[i], labels[i] - 1) for i in ids}
    return Listing(
        title=entry.title,
        base=root,
        classes=len(classes),
        train=tuple(items[i] for i in ids if is_train[i] == 1),
        test=tuple(items[i] for i in ids if is_train[i] == 0),
    )


# --------------------------------------------------------------------------- Stanford Dogs


def _mat_list(entry: Dataset, path: Path) -> list[tuple[str, int]]:
    """A Stanford Dogs list (`file_list`, `labels` 1..120): (path under Images/, label)."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
        files = [str(np.asarray(f).ravel()[0]) for f in np.asarray(mat["file_list"]).ravel()]
        labels = np.asarray(mat["labels"], dtype=np.float64).ravel()
    except Exception as exc:  # scipy's many ways to reject a file, or a missing key
        raise _broken(
            entry, path, f"is not a Stanford Dogs list (file_list, labels): {exc!r}"
        ) from None
    if len(files) != len(labels) or not len(files):
        raise _broken(entry, path, f"has {len(files)} files but {len(labels)} labels")
    if not np.all((labels >= 1) & (labels == np.round(labels))):
        raise _broken(entry, path, "has labels that are not whole numbers from 1")
    return [(f, int(label) - 1) for f, label in zip(files, labels, strict=True)]


def _dogs_lists(entry: Dataset, folder: Path) -> Path | None:
    """The folder holding train_list.mat and test_list.mat (lists/ or the folder itself)."""
    for lists in (folder / "lists", folder):
        if (lists / "train_list.mat").is_file() and (lists / "test_list.mat").is_file():
            return lists
    return None


def _dogs(entry: Dataset, folder: Path) -> Listing:
    """`Images/<wnid-breed>/<file>.jpg` and the official train_list.mat, test_list.mat."""
    if not (folder / "Images").is_dir() and (folder / "images.tar").is_file():
        extract(folder / "images.tar", folder)
    if _dogs_lists(entry, folder) is None and (folder / "lists.tar").is_file():
        extract(folder / "lists.tar", folder)
    lists = _dogs_lists(entry, folder)
    if lists is None or not (folder / "Images").is_dir():
        raise _missing(entry, folder)
    train = _mat_list(entry, lists / "train_list.mat")
    test = _mat_list(entry, lists / "test_list.mat")
    both = {f for f, _ in train} & {f for f, _ in test}
    if both:
        raise _broken(entry, lists / "test_list.mat", f"repeats training files (e.g. {min(both)})")
    breeds: dict[int, set[str]] = {}
    for f, label in train + test:
        breeds.setdefault(label, set()).add(f.split("/")[0])
    for label, names in sorted(breeds.items()):
        if len(names) != 1:
            shown = ", ".join(sorted(names)[:2])
            raise _broken(
                entry, lists, f"lists give label {label + 1} to several breed folders ({shown})"
            )
    return Listing(
        title=entry.title,
        base=folder / "Images",
        classes=max(breeds) + 1,
        train=tuple(train),
        test=tuple(test),
    )


# --------------------------------------------------------------------------- ImageFolder


def _class_images(
    entry: Dataset, folder: Path, split: str, index: dict[str, int]
) -> list[tuple[str, int]]:
    """(path under the tree, label) of every image in `<split>/<class>/…`, sorted."""
    found = []
    for class_dir in sorted(p for p in (folder / split).iterdir() if p.is_dir()):
        if class_dir.name.startswith("."):
            continue
        if class_dir.name not in index:
            raise _broken(entry, class_dir, "is not a class of train/ (its folder names)")
        for here, _, names in sorted(os.walk(class_dir, followlinks=True)):
            for name in sorted(names):
                if name.lower().endswith(IMAGE_SUFFIXES):
                    rel = (Path(here) / name).relative_to(folder).as_posix()
                    found.append((rel, index[class_dir.name]))
    if not found:
        raise _broken(entry, folder / split, "holds no images in class folders")
    return found


def _imagefolder(entry: Dataset, folder: Path) -> Listing:
    """`train/<class>/*`, `test/<class>/*` and, if there, `val/<class>/*`; classes from train/."""
    if not (folder / "train").is_dir() or not (folder / "test").is_dir():
        raise _missing(entry, folder)
    names = sorted(
        p.name for p in (folder / "train").iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    index = {name: i for i, name in enumerate(names)}
    val = _class_images(entry, folder, "val", index) if (folder / "val").is_dir() else None
    return Listing(
        title=entry.title,
        base=folder,
        classes=len(names),
        train=tuple(_class_images(entry, folder, "train", index)),
        test=tuple(_class_images(entry, folder, "test", index)),
        val=None if val is None else tuple(val),
    )


_LAYOUTS: dict[str, Callable[[Dataset, Path], Listing]] = {
    "CUB_200_2011": _cub,
    "StanfordDogs": _dogs,
    "ImageFolder": _imagefolder,
}
"""Each file layout (a registry entry's `source`) and the function that reads its lists."""


def listing(entry: Dataset, folder: Path) -> Listing:
    """Which files make up each official split, with 0-based labels (unpacking archives)."""
    return _LAYOUTS[entry.source](entry, folder)


def ensure(entry: Dataset, folder: Path, download: bool) -> None:
    """Every file the lists name is there, or one line says what is missing or broken.

    Nothing is downloaded: these data sets are put in place by hand (the entry's `fill`
    says how), so `download` changes nothing.
    """
    del download
    fingerprint(listing(entry, folder), 0)


def load(entry: Dataset, folder: Path, download: bool, size: int) -> DataSplits:
    """The official splits at `size`×`size`, a stratified tenth of train held out."""
    del download
    return to_splits(entry, listing(entry, folder), size, folder / f"caat-{size}.pt")
