"""A full disk: the run ends `failed` with "disk full" as its reason, its rows and
checkpoints agree, no temporary file is left, and once there is room again it resumes
to the end; a command on a store with no room left says so in one line and queues
nothing. On a small tmpfs, mounted when the test runner may (root); else skipped."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import run_cli

from caat_app.training.resume_point import read_resume_point
from caat_storage import Store

QUICK = ("--device", "cpu", "--attack-steps", "2", "--eval-steps", "2", "--eval-n", "64")
SIZE_MB = 4


@pytest.fixture
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A 4 MB tmpfs as CAAT_HOME's disk."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where = tmp_path / "small"
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    monkeypatch.setenv("CAAT_HOME", str(where / "home"))
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def fill(disk: Path, leave: int) -> Path:
    """A file that takes all but `leave` bytes (or everything: `leave` 0)."""
    filler = disk / "filler"
    try:
        with filler.open("wb") as handle:
            handle.write(b"\0" * max(0, free_bytes(disk) - leave))
            while leave == 0:
                handle.write(b"\0" * 4096)
                handle.flush()
    except OSError:
        pass  # full: what was asked for
    return filler


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_a_run_that_fills_the_disk_fails_cleanly_and_resumes(
    disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("runs") == 0
    filled: list[Path] = []

    def fill_after_the_first_checkpoint() -> None:
        deadline = time.monotonic() + 120
        while not list(disk.glob("home/runs/*/1/resume.json")) and time.monotonic() < deadline:
            time.sleep(0.005)
        filled.append(fill(disk, 0))

    filling = threading.Thread(target=fill_after_the_first_checkpoint, daemon=True)
    filling.start()
    assert run_cli("train", *QUICK, "--epochs", "8", "--name", "full") == 2
    filling.join()
    filler = filled[0]
    assert "run 1: disk full" in one_error_line(capsys)
    db = disk / "home" / "caat.db"
    with Store.open(f"sqlite:///{db}") as store:
        run = store.get_run(1)
        assert run is not None and run.status == "failed"
        assert (run.error or "").startswith("disk full")
        epochs = [e.epoch for e in store.epochs(1)]
        assert epochs == list(range(1, run.epochs_done + 1))  # rows and run agree
        assert [s.step for s in store.steps(1)] == list(range(len(store.steps(1))))
    folder = Path(run.run_dir)
    leftovers = [
        p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix in (".tmp", ".part")
    ]
    assert leftovers == []  # no temporary file, no reserve
    point = read_resume_point(folder)
    assert point is not None and point.epochs_done <= run.epochs_done
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    filler.unlink()  # room again: nothing was lost
    assert run_cli("resume", "1") == 0
    with Store.open(f"sqlite:///{db}") as store:
        run = store.get_run(1)
        assert run is not None and run.status == "finished" and run.epochs_done == 8
        assert [e.epoch for e in store.epochs(1)] == list(range(1, 9))


def test_a_store_with_no_room_queues_nothing(
    disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("runs") == 0
    filler = fill(disk, 0)
    assert run_cli("train", *QUICK, "--epochs", "1", "--detach") == 2
    one_error_line(capsys)
    filler.unlink()
    with Store.open(f"sqlite:///{disk / 'home' / 'caat.db'}") as store:
        assert store.list_runs() == []  # no orphan queued run
