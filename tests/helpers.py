"""Helpers the test modules share: the CLI as a function, and the dashboard under a Pilot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from textual.app import App
from textual.pilot import Pilot


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
