"""A full disk, told apart from other failures, and the room kept to say so.

A worker whose disk fills must still record that its run failed and why; that write
needs a little room itself. `DiskReserve` holds a small file next to the store while a
run trains and gives its space back the moment a failure is a full disk, so the final
status (and the flush before it) can land.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

RESERVE_BYTES = 512 * 1024
"""Room for the last flush and the run's final status: a few WAL frames of 4 KiB pages."""
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
SQLITE_FULL = "database or disk is full"


def disk_full_reason(exc: BaseException) -> str | None:
    """One line when `exc` (or what caused it) is a full disk or quota, else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in FULL_ERRNOS:
            where = f" writing {current.filename}" if current.filename else ""
            return f"disk full: {os.strerror(current.errno or 0).lower()}{where}"
        text = str(current)
        if SQLITE_FULL in text:
            return f"disk full: the store could not write ({SQLITE_FULL})"
        if "file write failed" in text or "No space left on device" in text:
            return f"disk full: {text.splitlines()[0]}"
        current = current.__cause__ or current.__context__
    return None


class DiskReserve:
    """A file of `size` bytes in `folder` (on the store's disk), released on demand."""

    def __init__(self, folder: Path | None, name: str, size: int = RESERVE_BYTES) -> None:
        self.path: Path | None = None
        if folder is None:
            return
        path = folder / name
        try:
            with path.open("wb") as handle:
                handle.write(b"\0" * size)  # written, not sparse: the blocks are held
                handle.flush()
                os.fsync(handle.fileno())
        except OSError:
            path.unlink(missing_ok=True)  # already full: nothing to hold
            return
        self.path = path

    def release(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None
