"""Every test gets its own CAAT_HOME, so nothing touches the user's store or data; store
tests get each back end (SQLite, and a throwaway PostgreSQL cluster where initdb exists)."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "caat-home"
    monkeypatch.setenv("CAAT_HOME", str(home))
    monkeypatch.delenv("CAAT_DB", raising=False)
    monkeypatch.delenv("CAAT_DATA", raising=False)
    os.environ.pop("CAAT_ARTIFACTS", None)
    yield home
    os.environ.pop("CAAT_ARTIFACTS", None)  # `caat --artifacts` in-process sets it


@pytest.fixture(autouse=True)
def _utc_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local times shown by the dashboard are UTC in tests, so snapshots do not move."""
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


@pytest.fixture(scope="session")
def digits_linear() -> tuple:
    """Logistic regression on digits (~95% clean test accuracy), trained once per session.

    The attack tests share it: a fixed, well-trained model gives their budgets something
    to break, and training it once keeps the suite fast.
    """
    import torch
    import torch.nn.functional as F

    from caat_app.data.splits import load_dataset
    from caat_app.models.build import build_model

    torch.manual_seed(0)
    data = load_dataset("digits")
    model = build_model(
        "linear", in_channels=1, num_classes=10, image_size=8, mean=data.mean, std=data.std
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(model(data.x_train), data.y_train).backward()
        opt.step()
    model.eval()
    return model, data.x_test, data.y_test


@pytest.fixture(scope="module")
def digits_model(request: pytest.FixtureRequest, digits_linear: tuple) -> tuple:
    """`digits_linear` on the first `N` test images, `N` set by the test module (else all)."""
    model, x, y = digits_linear
    n = getattr(request.module, "N", None)
    return (model, x, y) if n is None else (model, x[:n], y[:n])


# -- a throwaway PostgreSQL server ---------------------------------------------------------

PG_USER = "postgres"
"""The OS user that runs the test cluster when the tests run as root (initdb refuses root)."""


@dataclass
class PgServer:
    """A running test cluster: superuser `postgres`, trust auth, on 127.0.0.1:`port`."""

    port: int
    folder: Path
    _count: itertools.count = field(default_factory=itertools.count)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
        import psycopg

        with psycopg.connect(self.url().replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def new_database(self) -> str:
        """A fresh empty database's URL; each test that asks gets its own."""
        name = f"caat_{os.getpid()}_{next(self._count)}"
        # FILE_COPY: a plain copy of the template, ten times faster than WAL_LOG here.
        self.admin(f"CREATE DATABASE {name} STRATEGY FILE_COPY")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        """Shut the server down, cutting every connection (as a restart or a crash would)."""
        _pg_ctl(self.folder, self.port, "stop")

    def start(self) -> None:
        _pg_ctl(self.folder, self.port, "start")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _as_pg_user(argv: list[str]) -> list[str]:
    """PostgreSQL's tools refuse to run as root: run them as `postgres` then."""
    return ["runuser", "-u", PG_USER, "--", *argv] if os.geteuid() == 0 else argv


def _start_cluster(folder: Path) -> int:
    """initdb and start a cluster in `folder` (socket there too); its TCP port."""
    if os.geteuid() == 0:
        shutil.chown(folder, PG_USER, PG_USER)
    data, port = folder / "data", _free_port()
    quiet = {"check": True, "capture_output": True, "timeout": 120}
    init = ["initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
    subprocess.run(_as_pg_user([*init, "--locale=C", "--no-sync"]), **quiet)  # type: ignore[call-overload]
    _pg_ctl(folder, port, "start")
    return port


def _pg_ctl(folder: Path, port: int, action: str) -> None:
    """`pg_ctl start` (with the test cluster's settings) or `stop` (fast: connections cut)."""
    options = (
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200 "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    data, log = str(folder / "data"), str(folder / "log")
    how = ["-l", log, "-o", options] if action == "start" else ["-m", "fast"]
    command = ["pg_ctl", "-D", data, *how, "-w", action]
    subprocess.run(_as_pg_user(command), check=True, capture_output=True, timeout=120)


def _remove_cluster(folder: Path) -> None:
    stop = ["pg_ctl", "-D", str(folder / "data"), "-m", "immediate", "-w", "stop"]
    subprocess.run(_as_pg_user(stop), capture_output=True, timeout=60)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL 15 cluster for the session, in a temp folder, stopped at the end.

    Skipped, with the reason, where initdb is missing; as root (CI) it runs as `postgres`.
    """
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.skip("PostgreSQL's initdb/pg_ctl are not on the PATH: no test server")
    if os.geteuid() == 0 and (shutil.which("runuser") is None or not _has_user(PG_USER)):
        pytest.skip(f"running as root without runuser or a {PG_USER!r} user to run PostgreSQL")
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install caat[postgres])")
    folder = Path(tempfile.mkdtemp(prefix="caat-pg-"))
    try:
        port = _start_cluster(folder)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {exc.stderr.decode(errors='replace')}")
    try:
        yield PgServer(port, folder)
    finally:
        _remove_cluster(folder)


@pytest.fixture
def own_pg_server(pg_server: PgServer) -> Iterator[PgServer]:
    """A cluster of this test's own, to stop and start without disturbing the others'."""
    folder = Path(tempfile.mkdtemp(prefix="caat-pg-own-"))
    try:
        yield PgServer(_start_cluster(folder), folder)
    finally:
        _remove_cluster(folder)


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh empty PostgreSQL database for one test, dropped after it."""
    url = pg_server.new_database()
    try:
        yield url
    finally:
        pg_server.drop_database(url)


STORE_BACKENDS = ["sqlite", "postgres"]
"""The back ends every store test runs on; the ids show in the tests' names."""


@pytest.fixture(params=STORE_BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store's URL on each back end: a SQLite file in a missing folder, or a
    fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'caat.db'}"
    return str(request.getfixturevalue("pg_url"))


SqlRunner = Callable[..., list[tuple[Any, ...]]]


@pytest.fixture
def raw_sql() -> SqlRunner:
    """`raw_sql(url, sql, **params)`: one statement in its own committed transaction on
    any back end, bypassing the store (to read what it wrote, or break it on purpose)."""
    from sqlalchemy import create_engine, text

    def run(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        engine = create_engine(url)
        try:
            with engine.begin() as conn:
                result = conn.execute(text(sql), params)
                return [tuple(row) for row in result] if result.returns_rows else []
        finally:
            engine.dispose()

    return run
