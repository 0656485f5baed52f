"""Where the store lives: one place decides, so the CLI, the dashboard and workers agree."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def caat_home() -> Path:
    """The folder for caat's data; `CAAT_HOME` lets tests and users move it."""
    env = os.environ.get("CAAT_HOME")
    if env:
        return Path(env).expanduser().absolute()
    return Path(platformdirs.user_data_dir("caat"))


ARTIFACTS_ENV = "CAAT_ARTIFACTS"
"""The artifacts root every host of a shared store sees (checkpoints, logs, configs)."""


def artifacts_root(sqlite_file: Path | None, given: Path | str | None = None) -> Path:
    """Where run folders live: `given`, else $CAAT_ARTIFACTS, else the folder of a SQLite
    store's file, else caat's home. Stored run folders are relative to it, so hosts that
    mount one shared folder at different places still find every run's files."""
    chosen = given or os.environ.get(ARTIFACTS_ENV)
    if chosen:
        return Path(chosen).expanduser().absolute()
    if sqlite_file is not None:
        return sqlite_file.absolute().parent
    return caat_home()


def on_this_host(root: str, folder: str) -> str:
    """A stored run folder as a path here: a relative one under `root` (which ends in a
    separator), an absolute one (stored before the artifacts root) as it is."""
    return root + folder if folder and not os.path.isabs(folder) else folder


def _to_url(db: str) -> str:
    """A string with a scheme is a SQLAlchemy URL already; anything else is a SQLite file."""
    if "://" in db:
        return db
    return f"sqlite:///{Path(db).expanduser().absolute()}"


def resolve_db_url(db: str | None) -> str:
    """Turn `--db`, `CAAT_DB` or the default into one URL, in that order of precedence."""
    if db:
        return _to_url(db)
    env = os.environ.get("CAAT_DB")
    if env:
        return _to_url(env)
    return f"sqlite:///{caat_home() / 'caat.db'}"
