"""Every test gets its own CAAT_HOME, so nothing touches the user's store or data."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "caat-home"
    monkeypatch.setenv("CAAT_HOME", str(home))
    monkeypatch.delenv("CAAT_DB", raising=False)
    monkeypatch.delenv("CAAT_DATA", raising=False)
    return home


@pytest.fixture(autouse=True)
def _utc_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local times shown by the dashboard are UTC in tests, so snapshots do not move."""
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
