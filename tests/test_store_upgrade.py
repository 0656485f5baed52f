"""A store written by caat's first schema (the committed `fixtures/store-v1.db`, made by
`fixtures/make_store_v1.py`) upgrades in place after a backup, keeps every row, ends
with the schema a fresh store has, and says so in one line; newer stores are refused."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from helpers import run_cli

from caat_storage import SCHEMA_VERSION, Store, StoreError
from caat_storage.migrate import BASELINE, HEAD, REVISIONS, SCRIPTS

FIXTURE = Path(__file__).with_name("fixtures") / "store-v1.db"
COUNTS = {
    "run": 2,
    "step_metric": 10,
    "epoch_metric": 2,
    "run_layer": 2,
    "layer_metric": 1,
    "eval_result": 1,
    "eval_job": 1,
}
"""What `make_store_v1.py` wrote (two runs left of three)."""


@pytest.fixture
def old(tmp_path: Path) -> Path:
    path = tmp_path / "caat.db"
    shutil.copy(FIXTURE, path)
    return path


def counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as raw:
        return {t: raw.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COUNTS}


def schema(path: Path) -> dict[str, list[tuple[str, str, int]]]:
    """Each table's columns (name, type, not null) and whether ids autoincrement."""
    with sqlite3.connect(path) as raw:
        tables = [r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        out = {
            t: sorted((c[1], c[2], c[3]) for c in raw.execute(f"PRAGMA table_info({t})"))
            for t in tables
            if t != "sqlite_sequence"
        }
        sql = raw.execute("SELECT sql FROM sqlite_master WHERE name='run'").fetchone()[0]
    out["run autoincrement"] = [("AUTOINCREMENT" in sql, "", 0)]  # type: ignore[list-item]
    return out


def dump(path: Path) -> list[str]:
    """The store's whole content as SQL (the file's header may change: WAL mode)."""
    with sqlite3.connect(path) as raw:
        return list(raw.iterdump())


def test_the_fixture_is_a_version_1_store() -> None:
    with sqlite3.connect(FIXTURE) as raw:
        assert raw.execute("SELECT value FROM caat_meta").fetchall() == [("1",)]
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master")}
    assert "alembic_version" not in tables and "lab_report" not in tables
    assert counts(FIXTURE) == COUNTS


def test_an_old_store_upgrades_in_place_after_a_backup(old: Path, tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{old}") as store:
        said = store.upgraded
        assert said is not None and "from schema version 1 to 2" in said
        runs = {r.id: r.name for r in store.list_runs()}
        assert runs == {1: "v1-0", 2: "v1-1"}
        assert len(store.steps(1)) == 10 and store.get_run(1).status == "finished"  # type: ignore[union-attr]
        new = store.create_run(
            name="after", method="caat", param=0.8, dataset="digits", model="cnn", eps=0.1,
            config="{}", epochs_total=1,
        )  # fmt: skip
        assert new == 3
        store.delete_run(new)
        again = store.create_run(
            name="again", method="caat", param=0.8, dataset="digits", model="cnn", eps=0.1,
            config="{}", epochs_total=1,
        )  # fmt: skip
        assert again == 4  # a deleted last id is never handed out again
    backups = sorted(tmp_path.glob("caat-*-before-schema-2.db"))
    assert len(backups) == 1 and str(backups[0]) in said
    assert counts(backups[0]) == COUNTS  # the store as it was, whole
    with sqlite3.connect(backups[0]) as raw:
        assert raw.execute("SELECT value FROM caat_meta").fetchall() == [("1",)]
    assert {k: v for k, v in counts(old).items() if k != "run"} == {
        k: v for k, v in COUNTS.items() if k != "run"
    }
    fresh = tmp_path / "fresh.db"
    Store.open(f"sqlite:///{fresh}").close()
    assert schema(old) == schema(fresh)  # as if created by this caat
    with sqlite3.connect(old) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]
    with Store.open(f"sqlite:///{old}") as store:
        assert store.upgraded is None  # once only
    assert len(list(tmp_path.glob("caat-*-before-schema-2.db"))) == 1


def test_the_cli_says_it_upgraded_in_one_line(
    old: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("runs", "--db", str(old)) == 0
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("upgraded the store at")
    assert "v1-0" in captured.out and "v1-1" in captured.out


@pytest.mark.parametrize(
    ("sql", "says"),
    [
        ("UPDATE caat_meta SET value = '3'", "written by a newer caat"),
        ("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY);"
         "INSERT INTO alembic_version VALUES ('9999')", "written by a newer caat"),
    ],
)  # fmt: skip
def test_a_newer_store_is_refused_and_left_alone(
    old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], sql: str, says: str
) -> None:
    with sqlite3.connect(old) as raw:
        raw.executescript(sql)
    before = dump(old)
    with pytest.raises(StoreError, match=says):
        Store.open(f"sqlite:///{old}")
    assert run_cli("runs", "--db", str(old)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and says in err
    assert dump(old) == before and not list(tmp_path.glob("caat-*.db"))


def test_head_and_revisions_are_alembics_own() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    scripts = ScriptDirectory.from_config(config)
    assert scripts.get_current_head() == HEAD
    walk = [s.revision for s in scripts.walk_revisions()]
    assert tuple(reversed(walk)) == REVISIONS and REVISIONS[0] == BASELINE
    assert int(SCHEMA_VERSION) == len(REVISIONS)  # one schema version per revision
