"""How `caat runs` and the dashboard's run list cope with a big store, measured.

A store of 100 000 finished (or failed, cancelled, diverged) runs is written in one
bulk insert, then each reader is timed in a fresh interpreter, as a person meets it:
`caat runs` (its default page, `--limit 1000`, `--json`), the dashboard's first page
(`caat_storage.firstpage`) and a filtered, sorted page of the store (`list_runs` with
`count_runs`, what the runs screen polls). Each child's wall time and peak resident
memory (its own `wait4` usage, started from a small launcher) are reported, medians
over the repeats after one warm-up (bytecode and page caches). Torch-free, POSIX only.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from caat_app.config import build_config

CAAT = "from caat_app.cli import main; main()"
"""What the `caat` script runs (its entry point)."""
LAUNCHER = (
    "import json, os, sys, time\n"
    "start = time.perf_counter(); pid = os.fork()\n"
    "if pid == 0:\n"
    "    try:\n"
    "        os.execv(sys.argv[2], sys.argv[2:])\n"
    "    finally:\n"
    "        os._exit(127)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "seconds = time.perf_counter() - start\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "    code = os.waitstatus_to_exitcode(status)\n"
    "    json.dump({'seconds': seconds, 'maxrss_kib': usage.ru_maxrss, 'code': code}, f)\n"
)
"""Runs argv[2:] and leaves its wall time, peak RSS and exit code in the file argv[1]."""
FIRST_PAGE = (
    "import json, sys, time\n"
    "from caat_storage.firstpage import first_page\n"
    "t = time.perf_counter(); rows, total = first_page(sys.argv[1], 100)\n"
    "print(json.dumps({'ms': {'page': 1e3 * (time.perf_counter() - t)}, 'rows': len(rows),"
    " 'total': total}))\n"
)
"""The dashboard's first page, read with `sqlite3` before the store opens."""
STORE_PAGE = (
    "import json, sys, time\n"
    "from caat_storage import Store\n"
    "store = Store.open(sys.argv[1]); ms = {}; found = {}\n"
    "for label, search, sort in json.loads(sys.argv[2]):\n"
    "    t = time.perf_counter()\n"
    "    rows = store.list_runs(limit=100, search=search, sort=sort, descending=True)\n"
    "    total = store.count_runs(search=search)\n"
    "    ms[label] = 1e3 * (time.perf_counter() - t); found[label] = [len(rows), total]\n"
    "print(json.dumps({'ms': ms, 'found': found}))\n"
)
"""The runs screen's poll: one page of `list_runs` and its `count_runs`, per query."""
QUERIES = [
    ("newest", None, "id"),
    ("filter 'cifar10 caat', sort PGD", "cifar10 caat", "best_val_adv"),
    ("filter one sweep, sort SA", "grid-0420", "best_val_clean"),
]
"""(label, search, sort) of the store pages timed: the default view, a broad filter
sorted by a column without an index, and a filter that matches one sweep of 100 runs."""
STATUSES = ["finished"] * 17 + ["failed", "cancelled", "diverged"]
TRACEBACK = (
    "Traceback (most recent call last):\n"
    + '  File "caat_app/training/trainer.py", line 210, in run\n    self.epoch(epoch)\n' * 12
    + "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
)
"""What a failed run keeps in its `error` column (the full traceback)."""


def run_rows(count: int, root: str) -> Iterator[dict[str, Any]]:
    """`count` run rows as `caat sweep` leaves them: sweeps of 100, full configs, ids from 1."""
    base = build_config({"dataset": "cifar10", "model": "resnet18"}).model_dump(mode="json")
    base["data_dir"] = "/srv/datasets/cifar10"
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(count):
        sweep = f"grid-{i // 100:04d}"
        method = "caat" if i % 2 else "vanilla"
        param = round(0.1 * (i % 10), 1)
        seed = (i // 10) % 10
        name = f"{sweep}-{method}-{'gamma' if method == 'caat' else 'lam'}{param}-s{seed}"
        config = base | {"name": name, "method": method, "seed": seed, "eps": 8 / 255}
        config["gamma" if method == "caat" else "lam"] = param
        status = STATUSES[i % len(STATUSES)]
        created = start + timedelta(minutes=i)
        started = created + timedelta(seconds=30)
        yield {
            "name": name,
            "sweep": sweep,
            "status": status,
            "method": method,
            "param": param,
            "dataset": "cifar10",
            "model": "resnet18",
            "eps": 8 / 255,
            "config": json.dumps(config),
            "created_at": created,
            "started_at": started,
            "finished_at": started + timedelta(hours=2),
            "heartbeat_at": started + timedelta(hours=2),
            "run_dir": f"{root}/{i + 1}",
            "error": TRACEBACK if status == "failed" else None,
            "epochs_total": 100,
            "epochs_done": 100 if status == "finished" else i % 100,
            "steps_done": 39_000,
            "last_phi": 0.5 - (i % 97) / 97,
            "last_mu": 0.01 * (i % 13),
            "best_epoch": 90,
            "best_val_clean": 0.80 + (i % 50) / 1000,
            "best_val_adv": 0.45 + (i % 70) / 1000,
            "tags": "baseline" if i % 7 == 0 else "",
        }


def build_store(url: str, runs: int) -> dict[str, Any]:
    """A fresh store at `url` holding `runs` runs, written in bulk; what it took."""
    from sqlalchemy import create_engine, insert

    from caat_storage import Run, Store

    begun = time.perf_counter()
    with Store.open(url) as store:  # the schema, as caat makes it
        root = store.stored_runs_root().as_posix()  # as caat stores it
    engine = create_engine(url)
    rows = run_rows(runs, root)
    config_bytes, newest = 0, ""
    with engine.begin() as conn:
        while chunk := [row for _, row in zip(range(5000), rows, strict=False)]:
            config_bytes += sum(len(row["config"]) for row in chunk)
            newest = chunk[-1]["name"]
            conn.execute(insert(Run), chunk)
    engine.dispose()
    return {
        "runs": runs,
        "newest": newest,
        "build_seconds": time.perf_counter() - begun,
        "config_bytes_mean": config_bytes / max(runs, 1),
    }


def child_env() -> dict[str, str]:
    """The caller's environment with bytecode caching on, as a user's Python has it."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def summary(path: Path) -> dict[str, Any]:
    """What a probe wrote, read a line at a time (`--all --json` writes 200 MB): its line
    count, its last line, how many JSON records (`  {` lines) and a probe's own timings."""
    lines, records, last = 0, 0, ""
    with path.open(encoding="utf-8", errors="replace") as text:
        for line in text:
            lines += 1
            records += line == "  {\n"
            last = line.rstrip("\n") or last
    found: dict[str, Any] = {"output_lines": lines, "last_line": last[:200]}
    if records:
        found["records"] = records
    if last.startswith('{"ms"'):
        found |= json.loads(last)
    return found


def measure(argv: list[str], out: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of `argv` run to its end, its output in `out`.

    Started by `LAUNCHER`, a fresh small interpreter, never forked from this one: a
    forked child's peak RSS counts the parent's pages it was copied with.
    """
    import subprocess

    report = out.with_suffix(".usage")
    with out.open("wb") as sink:
        subprocess.run(
            [sys.executable, "-I", "-S", "-c", LAUNCHER, str(report), *argv],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=child_env(),
            check=True,
        )
    usage = json.loads(report.read_text())
    if usage["code"] != 0:
        tail = out.read_bytes()[-500:].decode(errors="replace")
        raise RuntimeError(f"{' '.join(argv[3:])} exited {usage['code']}: {tail}")
    return usage["seconds"], usage["maxrss_kib"] / 1024  # ru_maxrss: KiB on Linux


def probes(url: str) -> dict[str, list[str]]:
    """What is timed, each a command line of its own interpreter."""
    py = sys.executable
    return {
        "caat runs": [py, "-c", CAAT, "runs", "--db", url],
        "caat runs --limit 1000": [py, "-c", CAAT, "runs", "--db", url, "--limit", "1000"],
        "caat runs --json": [py, "-c", CAAT, "runs", "--db", url, "--json"],
        "dashboard first page": [py, "-c", FIRST_PAGE, url],
        "store pages": [py, "-c", STORE_PAGE, url, json.dumps(QUERIES)],
    }


def long_probes(url: str) -> dict[str, list[str]]:
    """Every run listed: timed once each (a minute or more), no warm-up needed."""
    py = sys.executable
    return {
        "caat runs --all": [py, "-c", CAAT, "runs", "--db", url, "--all"],
        "caat runs --all --json": [py, "-c", CAAT, "runs", "--db", url, "--all", "--json"],
    }


def timed(argv: list[str], out: Path, repeats: int, *, warm_up: bool = True) -> dict[str, Any]:
    """Median wall time and peak RSS of `repeats` runs after a warm-up, and what it wrote."""
    if warm_up:
        measure(argv, out)  # bytecode caches, the store's pages in the OS cache
    results = [measure(argv, out) for _ in range(repeats)]
    return {
        "seconds": statistics.median(r[0] for r in results),
        "peak_rss_mib": statistics.median(r[1] for r in results),
        "times": [r[0] for r in results],
    } | summary(out)


def dashboard_start(url: str, newest: str, repeats: int) -> dict[str, Any]:
    """Seconds from the dashboard starting to the newest run's name on its screen, in a
    pseudo-terminal (`caat_app.bench.startup`), median of `repeats` after a warm-up."""
    from caat_app.bench.startup import DASHBOARD, first_page

    argv = [sys.executable, "-c", DASHBOARD, url]
    first_page(argv, newest.encode())
    times = [first_page(argv, newest.encode())[0] for _ in range(repeats)]
    return {"seconds": statistics.median(times), "times": times}


def store_size_bench(
    *, runs: int = 100_000, repeats: int = 3, list_all: bool = True
) -> dict[str, Any]:
    """`caat runs` and the run list's pages on a store of `runs` runs: seconds, memory.

    `list_all`: also `caat runs --all` (and with `--json`), once each.
    """
    with tempfile.TemporaryDirectory(prefix="caat-bench-store-") as tmp:
        path = Path(tmp) / "big.db"
        url = f"sqlite:///{path}"
        report = build_store(url, runs)
        report["store_mib"] = sum(p.stat().st_size for p in Path(tmp).glob("big.db*")) / 2**20
        report["repeats"] = repeats
        out = Path(tmp) / "out.txt"
        found = {name: timed(argv, out, repeats) for name, argv in probes(url).items()}
        report["dashboard_start"] = dashboard_start(url, report["newest"], repeats)
        if list_all:
            for name, argv in long_probes(url).items():
                found[name] = timed(argv, out, 1, warm_up=False)
        report["probes"] = found
    return report


def store_size_lines(report: dict[str, Any]) -> list[str]:
    """The report as a person reads it: one line per probe."""
    lines = [
        f"store of {report['runs']} runs ({report['store_mib']:.0f} MiB, configs of "
        f"{report['config_bytes_mean']:.0f} bytes, written in {report['build_seconds']:.1f} s); "
        f"each reader in a fresh interpreter, median of {report['repeats']}:"
    ]
    start = report["dashboard_start"]
    lines.append(f"  dashboard start-up to its first page: {start['seconds']:.2f} s (pty)")
    for name, probe in report["probes"].items():
        queries = "; ".join(f"{k} {v:.0f} ms" for k, v in probe.get("ms", {}).items())
        once = ", once" if len(probe["times"]) == 1 else ""
        lines.append(
            f"  {name}: {probe['seconds']:.2f} s, peak {probe['peak_rss_mib']:.0f} MiB{once}"
            + (f" (in the process: {queries})" if queries else "")
        )
    return lines
