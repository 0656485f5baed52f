"""How long the dashboard takes to show its first page of runs, from a fresh interpreter.

Measured as a person meets it: `caat --db URL` started in a pseudo-terminal (80×24),
the clock stopped when the newest run's name is written to the terminal. Bytecode
caching is on, as a user's Python has it (the child's environment drops
PYTHONDONTWRITEBYTECODE) and one warm-up start writes the caches first. POSIX only.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from caat_app.config import build_config
from caat_storage import RunStatus, Store

SIZE = (24, 80)  # rows, columns
CAAT = "import sys; from caat_app.cli import main; main()"
"""What the `caat` script runs (its entry point), so the path is the user's own."""
DASHBOARD = "import sys; from caat_screens.app import run_dashboard; run_dashboard(sys.argv[1])"
"""The dashboard alone, without the CLI in front of it."""
TORCH_CHECK = (
    "import atexit, sys\n"
    "atexit.register(lambda: open({flag!r}, 'w').write(str('torch' in sys.modules)))\n"
)
"""Put in front of `CAAT`: leaves whether torch was imported in a file, at exit."""


def fill_store(url: str, runs: int) -> str:
    """A store of `runs` finished runs (queued ones would be started); the newest's name."""
    with Store.open(url) as store:
        config = build_config({}).model_dump(mode="json")
        for i in range(runs):
            run_id = store.create_run(
                name=f"startup-probe-{i}",
                config=config,
                method="caat",
                param=0.8,
                dataset="digits",
                model="cnn",
                eps=0.3,
                epochs_total=30,
            )
            store.finish(run_id, RunStatus.FINISHED)
    return f"startup-probe-{runs - 1}"


def _cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a process has used so far; None off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _env() -> dict[str, str]:
    """The caller's environment, with bytecode caching on and no Textual dev tooling."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEXTUAL")}
    for name in ("PYTHONDONTWRITEBYTECODE", "COLUMNS", "LINES"):
        env.pop(name, None)
    env["TERM"] = "xterm-256color"
    return env


def _drain(master: int, proc: Any, until: float) -> None:
    """Read what the child writes until it exits (a full terminal would block it)."""
    import select

    while proc.poll() is None and time.perf_counter() < until:
        if select.select([master], [], [], 0.05)[0]:
            try:
                os.read(master, 65536)
            except OSError:
                return


def first_page(argv: list[str], marker: bytes, *, timeout: float = 60.0) -> tuple[float, Any]:
    """Seconds from starting `argv` in a pseudo-terminal to `marker` on its screen, and the
    CPU seconds it had used by then; then `q` quits it."""
    import fcntl
    import select
    import struct
    import subprocess
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *SIZE, 0, 0))
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, env=_env(), start_new_session=True
    )
    os.close(slave)
    seen, found = b"", None
    try:
        while found is None and time.perf_counter() - start < timeout:
            if select.select([master], [], [], 0.05)[0]:
                try:
                    seen = seen[-4096:] + os.read(master, 65536)
                except OSError:  # the child closed its terminal: it ended
                    break
                if marker in seen:
                    found = (time.perf_counter() - start, _cpu_seconds(proc.pid))
            elif proc.poll() is not None:
                break
        if found is None:
            raise RuntimeError(f"no first page within {timeout:.0f} s: {seen[-300:]!r}")
        os.write(master, b"q")
        _drain(master, proc, time.perf_counter() + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)
    return found


def dashboard_startup(*, runs: int = 1000, repeats: int = 5) -> dict[str, Any]:
    """Seconds from `caat` starting to the runs table showing its first page (median).

    A fresh interpreter each time over a store of `runs` runs, after one warm-up start
    (bytecode caches). Also the dashboard alone (`run_dashboard`, no CLI in front), and
    the CPU seconds each used, which a busy machine inflates less than wall time.
    """
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'startup.db'}"
        marker = fill_store(url, runs).encode()
        flag = Path(tmp) / "torch"
        paths = {
            "caat": [sys.executable, "-c", TORCH_CHECK.format(flag=str(flag)) + CAAT, "--db", url],
            "dashboard": [sys.executable, "-c", DASHBOARD, url],
        }
        for argv in paths.values():
            first_page(argv, marker)  # warm-up: writes the bytecode caches
        timed: dict[str, list[tuple[float, Any]]] = {name: [] for name in paths}
        for _ in range(repeats):  # interleaved, so a busy moment hits both alike
            for name, argv in paths.items():
                timed[name].append(first_page(argv, marker))
        if flag.read_text().strip() != "False":
            raise RuntimeError("the dashboard imported torch")
    wall = {name: [t for t, _ in rows] for name, rows in timed.items()}
    cpu = {name: [c for _, c in rows if c is not None] for name, rows in timed.items()}
    return {
        "seconds": statistics.median(wall["caat"]),
        "dashboard_seconds": statistics.median(wall["dashboard"]),
        "cpu_seconds": statistics.median(cpu["caat"]) if cpu["caat"] else None,
        "dashboard_cpu_seconds": statistics.median(cpu["dashboard"]) if cpu["dashboard"] else None,
        "times": wall,
        "runs_in_store": runs,
        "repeats": repeats,
        "bytecode_cache": True,
    }
