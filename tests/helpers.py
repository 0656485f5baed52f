"""Helpers the test modules share: the CLI as a function, and the dashboard under a Pilot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from textual.app import App
from textual.pilot import Pilot

import caat_screens.app
from caat_screens.app import CaatApp


def run_cli(*args: str) -> int:
    """`caat ARGS` in this process; its exit code (0 when it returns normally)."""
    from caat_app.cli import main

    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def run_app(
    app: App[Any],
    body: Callable[[Pilot[Any]], Awaitable[None]],
    size: tuple[int, int] = (120, 36),
) -> None:
    """Run the app headless at `size` and hand its Pilot to `body`."""

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await body(pilot)

    asyncio.run(main())


async def wait_for(
    pilot: Pilot[Any], predicate: Callable[[], bool], timeout: float = 60, step: float = 0.05
) -> None:
    """Let the app run until `predicate` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting in the dashboard")
        await pilot.pause(step)


class NotingApp(CaatApp):
    """The dashboard on a store URL, polling fast, starting no worker, and keeping every
    notification it shows in `shown`."""

    CSS_PATH = str(Path(caat_screens.app.__file__).with_name("caat.tcss"))

    def __init__(self, url: str) -> None:
        super().__init__(url, poll_interval=0.1, gpus=[], start_workers=False)
        self.shown: list[str] = []

    def notify(self, message: str, **options: Any) -> None:  # type: ignore[override]
        self.shown.append(message)
        super().notify(message, **options)
