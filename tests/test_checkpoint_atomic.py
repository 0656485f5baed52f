"""Checkpoint files are written whole or not at all, and never leave a temporary behind."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

import pytest
import torch
from torch import nn

from caat_app.method.optim import FlatParams, FlatSGD
from caat_app.training.checkpoint import save_checkpoint, save_resume
from caat_app.training.resume_point import (
    RECORD,
    ResumePoint,
    atomic_write,
    discard_resume,
    read_resume_point,
    write_resume_point,
)


def _model() -> tuple[nn.Module, FlatSGD]:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    return model, FlatSGD(FlatParams(model).flat)


def _half_then_fail(obj: Any, f: IO[bytes], *args: Any, **kwargs: Any) -> None:
    f.write(b"half a checkpoint")
    raise OSError(28, "No space left on device")


def test_a_failing_torch_save_leaves_the_old_checkpoint_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, opt = _model()
    save_checkpoint(tmp_path, "last", model=model, optimizer=opt, epoch=1, step=9)
    before = (tmp_path / "last.pt").read_bytes()
    monkeypatch.setattr(torch, "save", _half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(tmp_path, "last", model=model, optimizer=opt, epoch=2, step=18)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert (tmp_path / "last.pt").read_bytes() == before
    monkeypatch.undo()
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 9


def test_a_failing_resume_save_keeps_the_committed_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = ResumePoint("resume-9.pt", 9, 1, {"best_epoch": 1})
    save_resume(tmp_path, {"step": 9, "x": torch.arange(3)}, old)
    monkeypatch.setattr(torch, "save", _half_then_fail)
    with pytest.raises(OSError):
        save_resume(tmp_path, {"step": 12}, ResumePoint("resume-12.pt", 12, 1))
    assert read_resume_point(tmp_path) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resume-9.pt", RECORD]


def test_a_failing_rename_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(src: Any, dst: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError):
        atomic_write(tmp_path / "x.bin", lambda fh: fh.write(b"data"))
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_fsyncs_the_file_and_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    atomic_write(tmp_path / "x.bin", lambda fh: fh.write(b"data"))
    assert (tmp_path / "x.bin").read_bytes() == b"data"
    assert len(synced) == (1 if os.name == "nt" else 2)


def test_a_new_point_replaces_the_old_state_and_discard_removes_both(tmp_path: Path) -> None:
    for step in (3, 7):
        save_resume(tmp_path, {"step": step}, ResumePoint(f"resume-{step}.pt", step, 0))
    assert read_resume_point(tmp_path) == ResumePoint("resume-7.pt", 7, 0, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resume-7.pt", RECORD]
    discard_resume(tmp_path)
    assert list(tmp_path.iterdir()) == [] and read_resume_point(tmp_path) is None


@pytest.mark.parametrize(
    "record",
    [
        "not json",
        '{"file": "resume-3.pt", "step": 3}',
        '{"file": "../resume-3.pt", "step": 3, "epochs_done": 0}',
        '{"file": "resume-4.pt", "step": 4, "epochs_done": 0}',
    ],
    ids=["garbage", "missing-field", "outside-the-folder", "missing-state"],
)
def test_an_unusable_record_is_no_resume_point(tmp_path: Path, record: str) -> None:
    (tmp_path / "resume-3.pt").write_bytes(b"state")
    (tmp_path / RECORD).write_text(record)
    assert read_resume_point(tmp_path) is None


def test_a_record_is_read_back_as_written(tmp_path: Path) -> None:
    (tmp_path / "resume-5.pt").write_bytes(b"state")
    point = ResumePoint("resume-5.pt", 5, 0, {"best_epoch": None, "nonfinite_steps": 0})
    write_resume_point(tmp_path, point)
    assert read_resume_point(tmp_path) == point
    assert read_resume_point(None) is None and read_resume_point(tmp_path / "none") is None
