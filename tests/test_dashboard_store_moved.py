"""The dashboard notices when its store file is deleted or replaced under it, says so at
once, and reopens the store at that path when asked (headless, real stores)."""

from __future__ import annotations

import os
from pathlib import Path

from helpers import NotingApp, run_app, wait_for
from textual.pilot import Pilot
from textual.widgets import DataTable

from caat_app.config import build_config
from caat_app.runs.manage import create_run
from caat_screens.modals import ConfirmScreen
from caat_storage import Store


def make_store(path: Path, names: list[str]) -> None:
    with Store.open(f"sqlite:///{path}") as store:
        for name in names:
            create_run(store, build_config({"name": name, "epochs": 1}))


def remove_store(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def rows(app: NotingApp) -> int:
    return app.screen.query(DataTable).first().row_count


def test_a_replaced_store_is_named_and_reopened(tmp_path: Path) -> None:
    path = tmp_path / "caat.db"
    make_store(path, ["old-a", "old-b"])
    other = tmp_path / "restored.db"
    make_store(other, ["new-a", "new-b", "new-c"])
    app = NotingApp(f"sqlite:///{path}")

    async def body(pilot: Pilot[None]) -> None:
        await wait_for(pilot, lambda: app.bench is not None and rows(app) == 2)
        remove_store(path)
        os.replace(other, path)  # as a restore does: a new file at the same path
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: any("reopened the store" in s for s in app.shown))
        await wait_for(pilot, lambda: rows(app) == 3)

    run_app(app, body)


def test_a_deleted_store_is_named_and_declining_starts_nothing(tmp_path: Path) -> None:
    path = tmp_path / "caat.db"
    make_store(path, ["a"])
    app = NotingApp(f"sqlite:///{path}")

    async def body(pilot: Pilot[None]) -> None:
        await wait_for(pilot, lambda: app.bench is not None and rows(app) == 1)
        remove_store(path)
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "was deleted" in app.screen.question  # type: ignore[attr-defined]
        await pilot.press("escape")
        await wait_for(pilot, lambda: any("still showing the deleted" in s for s in app.shown))
        await pilot.pause(1.5)  # another round of housekeeping: it asks only once
        assert not isinstance(app.screen, ConfirmScreen)
        assert not path.exists()  # nothing recreated the file behind the person's back

    run_app(app, body)
