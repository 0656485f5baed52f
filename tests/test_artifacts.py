"""The artifacts root: run folders are stored relative to it, so one store serves hosts
that mount the shared folder at different places (`--artifacts`, `CAAT_ARTIFACTS`)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli

from caat_storage import Store

SqlRunner = Callable[..., list[tuple[Any, ...]]]
CONFIG = {"name": "r", "method": "caat", "gamma": 0.7, "dataset": "digits", "device": "cpu"}


def _new_run(store: Store, sweep: str | None = None) -> int:
    fields = dict(name="r", config=CONFIG, method="caat", param=0.7, dataset="digits", model="cnn")
    if sweep is not None:
        fields.update(eps=0.3, epochs_total=1)
        return store.add_to_sweep(sweep, [fields], key=str)[0][0]
    return store.create_run(**fields, eps=0.3, epochs_total=1)  # type: ignore[arg-type]


def test_run_folders_are_stored_relative_and_read_under_each_hosts_root(
    store_url: str, raw_sql: SqlRunner, tmp_path: Path
) -> None:
    here, there = tmp_path / "mnt" / "lab", tmp_path / "shared"
    with Store.open(store_url, artifacts=here) as store:
        single, swept = _new_run(store), _new_run(store, sweep="grid")
        identity = store.store_id
        assert store.runs_root() == here / "runs" / identity
    stored = dict(raw_sql(store_url, "SELECT id, run_dir FROM run"))
    assert stored == {single: f"runs/{identity}/{single}", swept: f"runs/{identity}/{swept}"}
    with Store.open(store_url, artifacts=there) as other:
        expected = {rid: str(there / "runs" / identity / str(rid)) for rid in (single, swept)}
        assert {r.id: r.run_dir for r in other.list_runs()} == expected
        assert other.get_run(single).run_dir == expected[single]  # type: ignore[union-attr]
        assert [r.run_dir for r in other.sweep_runs("grid")] == [expected[swept]]


def test_a_run_folder_stored_absolute_before_is_kept(store_url: str, tmp_path: Path) -> None:
    with Store.open(store_url, artifacts=tmp_path / "a") as store:
        run_id = _new_run(store)
        store.update_run(run_id, run_dir="/old/place/7")
    with Store.open(store_url, artifacts=tmp_path / "b") as store:
        assert store.get_run(run_id).run_dir == "/old/place/7"  # type: ignore[union-attr]


def test_the_root_is_the_option_else_the_environment_else_beside_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'db' / 'caat.db'}"
    with Store.open(url) as store:
        assert store.artifacts == tmp_path / "db"
    monkeypatch.setenv("CAAT_ARTIFACTS", str(tmp_path / "env"))
    with Store.open(url) as store:
        assert store.artifacts == tmp_path / "env"
    with Store.open(url, artifacts=tmp_path / "given") as store:
        assert store.artifacts == tmp_path / "given"


def _train(db: Path, root: Path) -> None:
    args = ("--model", "linear", "--epochs", "1", "--attack-steps", "2", "--eval-steps", "2")
    assert run_cli("--artifacts", str(root), "train", "--db", str(db), *args) == 0


def test_a_run_trained_under_one_mount_is_evaluated_under_another(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, first = tmp_path / "store" / "caat.db", tmp_path / "host-a" / "shared"
    _train(db, first)
    checkpoints = list(first.glob("runs/*/1/best.pt"))
    assert len(checkpoints) == 1 and not (db.parent / "runs").exists()
    second = tmp_path / "host-b" / "lab"
    shutil.move(first, second)  # the same shared folder, mounted elsewhere
    capsys.readouterr()
    evaluate = ("eval", "1", "--db", str(db), "--attacks", "fgsm", "--eps", "0.1", "--n", "20")
    assert run_cli(*evaluate) == 2  # beside the store file there is nothing
    assert "no best checkpoint" in capsys.readouterr().err
    assert run_cli("--artifacts", str(second), *evaluate, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["attack"] for r in report["results"]] == ["fgsm"]
    assert run_cli("--artifacts", str(second), "show", "1", "--db", str(db), "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert Path(shown["run_dir"]).parent.parent.parent == second
