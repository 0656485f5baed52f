"""Big stores and big grids: `caat runs` pages, a sweep of over 1000 runs asks first."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from helpers import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len
from rich.console import Console

import caat_app.cli.base as base_cli
import caat_app.cli.inspect as inspect_cli
from caat_app.cli.inspect import run_record
from caat_app.cli.render import runs_table
from caat_storage import RunStatus, Store

RUNS = 120
ROW = re.compile(r"^\s*(\d+)\s{2,}")


class Terminal(io.StringIO):
    """Stdin as a person at a terminal answers it."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "caat.db")


@pytest.fixture
def big(db: str) -> str:
    """A store of 120 finished runs, run-1 … run-120; run 3's name is the longest."""
    with Store.open(f"sqlite:///{db}") as store:
        for i in range(1, RUNS + 1):
            run_id = store.create_run(
                name="a run whose name is much longer than the rest" if i == 3 else f"run-{i}",
                config={"method": "caat", "gamma": 0.8, "seed": i},
                method="caat",
                param=0.8,
                dataset="digits",
                model="cnn",
                eps=0.3,
                epochs_total=3,
            )
            assert run_id == i
            store.finish(run_id, RunStatus.FINISHED)
    return db


def _ids(text: str) -> list[int]:
    return [int(m[1]) for line in text.splitlines() if (m := ROW.match(line))]


def _table(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[list[int], list[str]]:
    assert run_cli("runs", *args) == 0
    out = capsys.readouterr().out
    return _ids(out), out.rstrip("\n").splitlines()


def test_runs_shows_the_newest_page_and_says_how_many_more(
    big: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ids, lines = _table(capsys, "--db", big)
    assert ids == list(range(RUNS, RUNS - 50, -1))
    assert lines[-1] == f"showing 50 of {RUNS} runs; --all or --limit N for more"

    ids, lines = _table(capsys, "--db", big, "--limit", "7")
    assert ids == list(range(RUNS, RUNS - 7, -1))
    assert lines[-1] == f"showing 7 of {RUNS} runs; --all or --limit N for more"

    for args in (["--all"], ["--limit", str(RUNS)], ["--limit", "1000"]):
        ids, lines = _table(capsys, "--db", big, *args)
        assert ids == list(range(RUNS, 0, -1))
        assert not any("showing" in line for line in lines)


def test_runs_json_pages_the_same_and_says_so_on_stderr(
    big: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for args, count in (([], 50), (["--limit", "7"], 7), (["--all"], RUNS)):
        assert run_cli("runs", "--db", big, "--json", *args) == 0
        captured = capsys.readouterr()
        records = json.loads(captured.out)
        assert [r["id"] for r in records] == list(range(RUNS, RUNS - count, -1))
        assert records[0]["config"] == {"method": "caat", "gamma": 0.8, "seed": RUNS}
        shown = f"showing {count} of {RUNS} runs; --all or --limit N for more\n"
        assert captured.err == ("" if count == RUNS else shown)


def test_a_wide_terminal_gets_every_column_as_rich_draws_it(
    big: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base_cli.out, "width", 200)
    assert run_cli("runs", "--db", big, "--all") == 0
    reference = Console(file=io.StringIO(), width=200, highlight=False)
    with Store.open(f"sqlite:///{big}") as store:
        reference.print(runs_table(store.list_runs(), store.url))
    assert capsys.readouterr().out == reference.file.getvalue()  # type: ignore[attr-defined]


def test_an_80_column_terminal_leaves_out_the_least_needed_columns(
    big: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base_cli.out, "width", 80)
    assert run_cli("runs", "--db", big, "--all") == 0
    printed = capsys.readouterr().out
    assert all(cell_len(line) <= 80 for line in printed.splitlines())
    header = next(line for line in printed.splitlines() if line.split()[:2] == ["id", "name"])
    assert {"status", "method", "SA", "PGD"} <= set(header.split()) and "μ" not in header
    with Store.open(f"sqlite:///{big}") as store:
        names = [run.name for run in store.list_runs()]
    assert all(name in printed.replace("\n", " ") or name.startswith("a run") for name in names)
    assert "a run whose" in printed  # the long name wraps in its column, never vanishes


def test_all_and_limit_together_is_one_line(big: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("runs", "--db", big, "--all", "--limit", "3") == 2
    captured = capsys.readouterr()
    assert captured.err == "error: give one of --all and --limit\n" and captured.out == ""


def test_an_empty_store_says_so(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("runs", "--db", db) == 0
    assert capsys.readouterr().out.startswith("no runs in ")
    assert run_cli("runs", "--db", db, "--json") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == [] and captured.err == ""


def test_a_long_listing_is_drawn_a_chunk_at_a_time_as_one_table(
    big: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inspect_cli, "CHUNK", 16)  # 120 runs: 8 chunks, the longest name last
    ids, lines = _table(capsys, "--db", big, "--all")
    assert ids == list(range(RUNS, 0, -1))
    rows = [line for line in lines if ROW.match(line)]
    assert len({cell_len(line.rstrip()) for line in rows}) == 1  # every row as wide
    starts = {line.index("finished") for line in rows}
    assert len(starts) == 1  # the status column where it is in the first chunk
    assert any("a run whose name is much longer than the rest" in line for line in rows)
    assert sum(line.split()[:2] == ["id", "name"] for line in lines) == 1  # one header

    with Store.open(f"sqlite:///{big}") as store:
        expected = json.dumps([run_record(r) for r in store.list_runs()], indent=2) + "\n"
    assert run_cli("runs", "--db", big, "--json", "--all") == 0
    assert capsys.readouterr().out == expected  # byte for byte what one json.dumps writes


# -- a sweep of over 1000 runs asks first ----------------------------------------------------


def _sweep(db: str, name: str, seeds: int, *extra: str) -> int:
    spread = ",".join(str(s) for s in range(seeds))
    base = ["sweep", "--name", name, "--db", db, "--epochs", "1", "--seeds", spread]
    return run_cli(*base, "--detach", *extra)


def _queued(db: str, name: str) -> int:
    with Store.open(f"sqlite:///{db}") as store:
        return len(store.sweep_runs(name))


def test_a_big_sweep_without_a_terminal_is_refused_in_one_line(
    db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert _sweep(db, "big", 1001) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        "error: sweep big's grid has 1001 runs, over 1000: pass --yes to queue them all\n"
    )
    assert captured.out == "" and not Path(db).exists()  # nothing queued, no store made

    assert _sweep(db, "big", 1001, "--yes") == 0
    assert "1001 queued now" in capsys.readouterr().out
    assert _queued(db, "big") == 1001

    assert _sweep(db, "edge", 1000) == 0  # 1000 is not over the line: no question
    assert _queued(db, "edge") == 1000


def test_a_big_sweep_asks_a_person_and_a_no_queues_nothing(
    db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    assert _sweep(db, "big", 1001) == 1
    out = capsys.readouterr().out
    assert "sweep big's grid has 1001 runs; queue them all? [y/N]" in out
    assert out.rstrip().endswith("nothing queued") and not Path(db).exists()

    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    assert _sweep(db, "big", 1001) == 0
    assert "1001 queued now" in capsys.readouterr().out
    assert _queued(db, "big") == 1001


def test_the_paper_asks_too_when_seeds_make_it_big(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seeds = ",".join(str(s) for s in range(46))  # fig3 at smoke scale: 22 runs a seed
    args = ["paper", "fig3", "--scale", "smoke", "--seeds", seeds, "--db", db]
    args += ["--out", str(tmp_path / "out")]
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert run_cli(*args) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        "error: fig3 (smoke scale) has 1012 runs, over 1000: pass --yes to queue them all\n"
    )
    assert not Path(db).exists()

    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    assert run_cli(*args, "--json") == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout is the JSON's alone: the question goes to stderr
    assert "has 1012 runs; queue them all?" in captured.err and "nothing queued" in captured.err
    assert not Path(db).exists()


# -- the filter's SQL on SQLite: LIKE, not lower() LIKE lower(), the same matches -------------

NAMES = ["CIFAR-caat", "cifar_b", "Γάμμα", "γάμμα", "ÉTÉ 10%", "été", "back\\slash", "plain"]


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('names') / 'caat.db'}"
    with Store.open(url) as store:
        for name in NAMES:
            store.create_run(
                name=name,
                config={},
                method="caat",
                param=0.8,
                dataset="digits",
                model="cnn",
                eps=0.3,
                epochs_total=1,
            )
    return url


def _reference_count(url: str, search: str) -> int:
    """The filter as it was written before: SQLAlchemy's ILIKE (`lower() LIKE lower()`)."""
    from sqlalchemy import create_engine, func, or_, select

    from caat_storage import SEARCH_COLUMNS
    from caat_storage.values import RUN_TABLE

    def pattern(word: str) -> str:
        return "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

    statement = select(func.count()).select_from(RUN_TABLE)
    for word in search.split():
        columns = (RUN_TABLE.c[c].ilike(pattern(word), escape="\\") for c in SEARCH_COLUMNS)
        statement = statement.where(or_(*columns))
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(statement).scalar_one())
    finally:
        engine.dispose()


@settings(max_examples=60, deadline=None)
@given(search=st.text(alphabet="aAcCγΓéÉtT_%\\ 1", min_size=0, max_size=4))
def test_the_filter_matches_what_ilike_matched(named: str, search: str) -> None:
    with Store.open(named) as store:
        assert store.count_runs(search=search) == _reference_count(named, search)
        assert len(store.list_runs(search=search)) == store.count_runs(search=search)


def test_the_filter_is_a_plain_like_on_sqlite_and_ilike_elsewhere() -> None:
    from sqlalchemy.dialects import postgresql, sqlite

    from caat_storage import list_statement

    statement = list_statement(search="cifar")
    on_sqlite = str(statement.compile(dialect=sqlite.dialect()))
    on_postgres = str(statement.compile(dialect=postgresql.dialect()))
    assert "lower(" not in on_sqlite and on_sqlite.count(" LIKE ") == 7
    assert "= 1" not in on_sqlite.split("WHERE")[1]
    assert on_postgres.count(" ILIKE ") == 7
