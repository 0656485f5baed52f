"""Where a run can be resumed from, readable without torch, and atomic file writes.

A resume checkpoint is two files in the run's folder: `resume-<step>.pt` (the trainer's
whole state, written by `checkpoint.save_resume`) and `resume.json`, the commit record
that names it with the step, the complete epochs and the run's summary fields there.
The record is written last, so it never names a file that is not complete; the file
it named before is removed only after. The dashboard and `caat resume` read the record
to trim the store's rows before a worker loads the checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

RECORD = "resume.json"
"""The commit record's name in a run's folder."""
STATE_GLOB = "resume-*.pt"


def state_name(step: int) -> str:
    """The file name of the resume state taken after `step` steps."""
    return f"resume-{step}.pt"


@dataclass(frozen=True)
class ResumePoint:
    """A resume checkpoint as the record describes it.

    `step`: steps taken (the step rows a resumed run keeps are those below it);
    `epochs_done`: complete epochs (the epoch rows it keeps); `fields`: the run's
    summary fields at that point (best and last accuracies, counts).
    """

    file: str
    step: int
    epochs_done: int
    fields: dict[str, Any] = field(default_factory=dict)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable; a no-op where folders cannot be opened (Windows)."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` whole or not at all: a temporary file in the same folder, flushed and
    fsynced, renamed over it, then the folder fsynced.

    A reader sees the old file or the new one, never a torn write; on any failure
    (`write` raising included) the temporary file is removed and the old file stays.
    """
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(folder)


def write_resume_point(run_dir: Path, point: ResumePoint) -> None:
    """Commit `point` as the run's resume point, then remove the states it superseded."""
    text = json.dumps(asdict(point), indent=2).encode()
    atomic_write(run_dir / RECORD, lambda fh: fh.write(text))
    for old in run_dir.glob(STATE_GLOB):
        if old.name != point.file:
            old.unlink(missing_ok=True)


def read_resume_point(run_dir: Path | str | None) -> ResumePoint | None:
    """The run's resume point, or None when it has none (or only an unreadable one)."""
    if not run_dir:
        return None
    folder = Path(run_dir)
    try:
        data = json.loads((folder / RECORD).read_text())
        point = ResumePoint(
            file=str(data["file"]),
            step=int(data["step"]),
            epochs_done=int(data["epochs_done"]),
            fields=dict(data.get("fields") or {}),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if Path(point.file).name != point.file or not (folder / point.file).is_file():
        return None
    return point


def discard_resume(run_dir: Path | str | None) -> None:
    """Remove a run's resume checkpoint (a finished run needs none); the record first."""
    if not run_dir:
        return
    folder = Path(run_dir)
    (folder / RECORD).unlink(missing_ok=True)
    for old in folder.glob(STATE_GLOB):
        old.unlink(missing_ok=True)
