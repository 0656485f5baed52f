"""What `pip install .` puts into site-packages: every package of the tree, under caat's names."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Folder on disk → the name it is installed (and imported) under.
INSTALLED_AS = {"caat_app": "caat_app", "storage": "caat_storage", "screens": "caat_screens"}


def _packages_in_tree() -> set[str]:
    found = set()
    for folder, name in INSTALLED_AS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            if "__pycache__" not in parts:
                found.add(".".join((name, *parts)))
    return found


def test_every_package_of_the_tree_is_installed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config["packages"]) == _packages_in_tree()
    assert config["package-dir"] == {"caat_storage": "storage", "caat_screens": "screens"}


def test_no_installed_top_level_name_is_a_generic_one() -> None:
    tops = {name.split(".")[0] for name in _packages_in_tree()}
    assert tops == {"caat_app", "caat_storage", "caat_screens"}
