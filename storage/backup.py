"""A store outliving one version of caat: its file backed up while workers write, a backup
checked and restored over it, and the run folders deleted runs left behind collected.

SQLite only for backup and restore (PostgreSQL has pg_dump); the copies go through
SQLite's online backup API, never a file copy, so a store in WAL mode with its -wal and
-shm files is always copied and replaced whole, as of one committed moment.
"""

import contextlib
import os
import shutil
import sqlite3
import stat
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .base import STORE_ID_KEY, describe_location, one_line
from .engine import _sqlite_file
from .errors import StoreError
from .models import SCHEMA_VERSION, EvalJob, Meta, Run
from .runs import RunsMixin
from .status import RunStatus

BUSY_S = 30.0
"""How long a connection here waits for another's lock, as the store's own engine does."""

STALE_TEMP_S = 3600.0
"""A temporary file in a run folder untouched this long belongs to a write that died."""

TEMP_SUFFIXES = (".part", ".tmp")

TOOLS = {"back up": "back it up with pg_dump", "restore": "restore it with pg_restore (or psql)"}
"""What to do instead, per action, for a PostgreSQL store: its own tools copy it whole."""


def store_file(url: str, action: str) -> Path:
    """The SQLite file behind `url`; StoreError naming the right tool for anything else.

    `action` reads in the message: "back up" or "restore".
    """
    where = describe_location(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"cannot {action} {where}: {one_line(exc)}") from exc
    backend = parsed.get_backend_name()
    if backend != "sqlite":
        if backend == "postgresql":
            how, backend = TOOLS.get(action, "use pg_dump"), "PostgreSQL"
        else:
            how = f"{action} it with its own tools"
        raise StoreError(f"the store at {where} is a {backend} database, not a SQLite file: {how}")
    path = _sqlite_file(parsed.database)
    if path is None:
        raise StoreError(f"the store is {where}: there is no file to {action}")
    return path.absolute()


def default_backup_path(store: Path, suffix: str = "", now: datetime | None = None) -> Path:
    """`<store name>-YYYYmmdd-HHMMSS<suffix>.db` next to the store: sorted by name, by age."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return store.with_name(f"{store.stem}-{stamp}{suffix}.db")


def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """A plain connection; `read_only` for a file that is someone's backup, not ours to write."""
    if read_only:
        return sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=BUSY_S)
    return sqlite3.connect(path, timeout=BUSY_S)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable; a system that cannot open folders has no need."""
    with contextlib.suppress(PermissionError, IsADirectoryError):
        _fsync(folder)


def _snapshot(source: sqlite3.Connection, folder: Path) -> Path:
    """`source` as of one moment, in a new self-contained file in `folder`, on disk."""
    fd, name = tempfile.mkstemp(prefix=".caat-", suffix=".tmp", dir=folder)
    os.close(fd)
    copy = Path(name)
    try:
        target = sqlite3.connect(copy)
        try:
            # Every page in one step, inside one read transaction: a snapshot that WAL
            # writers never wait for. A step of fewer pages restarts at every write.
            source.backup(target, pages=-1)
            target.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
        finally:
            target.close()
        _fsync(copy)
    except BaseException:
        copy.unlink(missing_ok=True)
        raise
    return copy


def backup_store(store: Path, target: Path) -> int:
    """Copy the store file `store` to the new file `target`, safely while workers write;
    the copy's size in bytes. An existing `target` is refused, never overwritten."""
    if not store.is_file():
        raise StoreError(f"no store at {store}")
    target = target.absolute()
    try:
        with open(target, "x"):  # claims the name: no two backups write one file
            pass
    except FileExistsError:
        raise StoreError(f"{target} exists; a backup never overwrites a file") from None
    except OSError as exc:
        raise StoreError(f"cannot write {target}: {one_line(exc)}") from exc
    try:
        source = _connect(store)
        try:
            copy = _snapshot(source, target.parent)
        finally:
            source.close()
        os.chmod(copy, stat.S_IMODE(store.stat().st_mode))  # readable by whom the store is
        os.replace(copy, target)
        _fsync_folder(target.parent)
    except (sqlite3.Error, OSError) as exc:
        target.unlink(missing_ok=True)
        raise StoreError(f"cannot back up {store}: {one_line(exc)}") from exc
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target.stat().st_size


@dataclass(frozen=True)
class Restored:
    """What `restore_store` did: the restored store's id and runs, and where the store as
    it was went (None: there was no store)."""

    store_id: str | None
    runs: int
    saved: Path | None = None
    saved_size: int = 0


def _check_copy(copy: Path, named: Path) -> tuple[str | None, int]:
    """Refuse anything but an intact caat store this caat reads; (its store id, its runs)."""
    conn = _connect(copy, read_only=True)
    try:
        report = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
        if report != ["ok"]:
            # A row may hold several lines, the first naming the database: keep one problem.
            lines = [ln for row in report for ln in row.splitlines() if not ln.startswith("*")]
            raise StoreError(f"{named} fails SQLite's integrity check: {(lines or report)[0]}")
        meta = f"SELECT value FROM {Meta.__tablename__} WHERE key = ?"
        try:
            version = conn.execute(meta, ("schema_version",)).fetchone()
        except sqlite3.OperationalError:  # no such table
            version = None
        if version is None:
            raise StoreError(f"{named} is not a caat store: it has no caat_meta schema_version")
        # An older store is upgraded when it is next opened; a newer one would be misread.
        if not str(version[0]).isdecimal() or int(version[0]) > SCHEMA_VERSION:
            raise StoreError(
                f"{named} has schema version {version[0]}; this caat reads up to {SCHEMA_VERSION}"
            )
        store_id = conn.execute(meta, (STORE_ID_KEY,)).fetchone()
        runs = conn.execute(f"SELECT count(*) FROM {Run.__tablename__}").fetchone()[0]
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {named}: {one_line(exc)}") from exc
    finally:
        conn.close()
    return (store_id[0] if store_id else None), int(runs)


def running_work(store: Path) -> tuple[list[int], list[int]]:
    """The ids of the runs and of the evaluation jobs that the store says are running."""
    running = RunStatus.RUNNING.value
    conn = _connect(store)
    try:
        runs = conn.execute(
            f"SELECT id FROM {Run.__tablename__} WHERE status = ? ORDER BY id", (running,)
        ).fetchall()
        jobs = conn.execute(
            f"SELECT id FROM {EvalJob.__tablename__} WHERE status = ? ORDER BY id", (running,)
        ).fetchall()
    except sqlite3.Error as exc:
        raise StoreError(
            f"cannot read the store at {store} ({one_line(exc)}); --force restores over it"
        ) from exc
    finally:
        conn.close()
    return [row[0] for row in runs], [row[0] for row in jobs]


def _refuse_running(store: Path) -> None:
    runs, jobs = running_work(store)
    busy = [f"run {i}" for i in runs] + [f"evaluation {i}" for i in jobs]
    if busy:
        verb = "is" if len(busy) == 1 else "are"
        raise StoreError(
            f"{', '.join(busy)} {verb} running in {store}: cancel or wait, or pass --force"
        )


def _install(copy: Path, store: Path) -> None:
    """Write `copy` over the store through SQLite, in one transaction of the store's own.

    Until it commits the store stays as it was; its -wal and -shm stay consistent with
    it, and a stale -wal of a removed store file is discarded by SQLite on open.
    """
    target = _connect(store)
    try:
        target.execute("PRAGMA journal_mode=WAL")
        page_size = target.execute("PRAGMA page_size").fetchone()[0]
        source = _connect(copy)
        try:
            # A WAL store cannot take pages of another size: resize the copy, not the store.
            if source.execute("PRAGMA page_size").fetchone()[0] != page_size:
                source.execute(f"PRAGMA page_size={int(page_size)}")
                source.execute("VACUUM")
            source.backup(target, pages=-1)
        finally:
            source.close()
        target.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        target.close()


def _stage(backup: Path, folder: Path) -> Path:
    """The backup copied into `folder`, where it is checked and from where it is written."""
    try:
        source = _connect(backup, read_only=True)
        try:
            return _snapshot(source, folder)
        finally:
            source.close()
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"cannot read {backup}: {one_line(exc)}") from exc


def restore_store(
    backup: Path, store: Path, *, force: bool = False, save_to: Path | None = None
) -> Restored:
    """Replace the store file `store` with `backup` once it is checked to be an intact
    caat store; the store as it was is first saved to `save_to` (default: a dated name
    next to it). Refused while a run or an evaluation is running, unless `force`."""
    backup, store = backup.absolute(), store.absolute()
    if not backup.is_file():
        raise StoreError(f"no backup at {backup}")
    if store.exists() and backup.samefile(store):
        raise StoreError(f"{backup} is the store itself")
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot restore into {store}: {one_line(exc)}") from exc
    copy = _stage(backup, store.parent)
    try:
        store_id, runs = _check_copy(copy, backup)
        saved, saved_size = None, 0
        if store.exists():
            if not force:
                _refuse_running(store)
            saved = save_to or default_backup_path(store, "-before-restore")
            saved_size = backup_store(store, saved)
        try:
            _install(copy, store)
        except (sqlite3.Error, OSError) as exc:
            kept = f"; it is unchanged (also saved to {saved})" if saved else ""
            raise StoreError(f"cannot restore into {store}: {one_line(exc)}{kept}") from exc
    finally:
        copy.unlink(missing_ok=True)
    return Restored(store_id, runs, saved, saved_size)


# -- what deleted runs left behind ---------------------------------------------------------


@dataclass
class Garbage:
    """What `caat gc` removes: run folders of no run (path, bytes) and stale temporary
    files in run folders; `others` are folders beside this store's, left alone."""

    folders: list[tuple[Path, int]] = field(default_factory=list)
    temps: list[tuple[Path, int]] = field(default_factory=list)
    others: list[Path] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(size for _, size in self.folders + self.temps)


def _tree_size(path: Path) -> int:
    """Bytes of the regular files under `path`; links are neither counted nor followed."""
    if path.is_symlink():
        return 0
    total = 0
    for top, _dirs, files in os.walk(path):  # followlinks=False: a linked folder is skipped
        for name in files:
            try:
                info = os.lstat(os.path.join(top, name))
            except OSError:
                continue
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total


def _stale_temps(folder: Path, before: float) -> list[tuple[Path, int]]:
    """Regular `*.part` and `*.tmp` files under `folder` last written before `before`."""
    found = []
    for top, _dirs, files in os.walk(folder):
        for name in files:
            if not name.endswith(TEMP_SUFFIXES):
                continue
            path = Path(top, name)
            try:
                info = path.lstat()
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode) and info.st_mtime < before:
                found.append((path, info.st_size))
    return found


def _entries(folder: Path) -> list[Path]:
    """What `folder` holds; nothing when it was never made."""
    try:
        return sorted(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _run_folder(run: Run, roots: set[Path]) -> Path | None:
    """The run's folder if it is caat's own (`<root>/<id>`, a real folder), else None."""
    folder = Path(run.run_dir) if run.run_dir else None
    if folder is None or folder.name != str(run.id) or folder.parent not in roots:
        return None
    return folder if folder.is_dir() and not folder.is_symlink() else None


def find_garbage(store: RunsMixin, now: float | None = None) -> Garbage:
    """What deleted runs left in this store's runs root, and stale temporary files.

    The folders are listed before the runs are read: a run's row is written before its
    folder is made, so a folder seen here whose run exists is always known to be its.
    Only folders named by a run id count; a folder of an existing run is never garbage.
    """
    root, shared = store.runs_root(), store.shared_runs_root()
    entries = [e for e in _entries(root) if e.name.isdecimal() and (e.is_dir() or e.is_symlink())]
    beside = [e for e in _entries(shared) if e != root and e.is_dir()]
    runs = store.list_runs()
    ids = {str(run.id) for run in runs}
    dirs = {Path(run.run_dir) for run in runs if run.run_dir}
    garbage = Garbage()
    for entry in entries:
        if entry.name not in ids and entry not in dirs:
            garbage.folders.append((entry, _tree_size(entry)))
    before = (time.time() if now is None else now) - STALE_TEMP_S
    for run in runs:
        folder = _run_folder(run, {root, shared})
        if folder is not None:
            garbage.temps += _stale_temps(folder, before)
    garbage.others = [e for e in beside if e not in dirs]
    return garbage


def remove_garbage(store: RunsMixin, garbage: Garbage) -> tuple[int, int, list[str]]:
    """Remove what `find_garbage` found: (paths removed, bytes freed, failures as lines).

    A folder is checked once more to belong to no run just before it goes; a link is
    unlinked, never followed.
    """
    removed, freed, failures = 0, 0, []
    for path, size in garbage.folders:
        if store.get_run(int(path.name)) is not None:
            continue
        try:
            if path.is_symlink():
                path.unlink()
            else:
                shutil.rmtree(path)
        except OSError as exc:
            failures.append(f"{path}: {one_line(exc)}")
            continue
        removed, freed = removed + 1, freed + size
    for path, size in garbage.temps:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            failures.append(f"{path}: {one_line(exc)}")
            continue
        removed, freed = removed + 1, freed + size
    return removed, freed, failures
