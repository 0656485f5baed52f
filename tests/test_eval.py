"""`caat eval`: the attack table of a saved run, stored and reused, with its masking report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from caat_app.cli import main
from caat_app.evaluate import stratified_order
from storage import Store


def run_cli(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> str:
    db = str(tmp_path_factory.mktemp("eval") / "caat.db")
    code = run_cli(
        "train",
        "--db",
        db,
        "--epochs",
        "2",
        "--model",
        "linear",
        "--attack-steps",
        "3",
        "--eval-steps",
        "3",
    )
    assert code == 0
    return db


def test_eval_json_is_stored_and_reused(
    trained: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[dict] = []
    real_load = torch.load

    def spy_load(*args, **kwargs):
        loads.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy_load)
    args = (
        "eval",
        "1",
        "--db",
        trained,
        "--attacks",
        "fgsm,pgd",
        "--eps",
        "0.05,0.3",
        "--n",
        "60",
        "--json",
    )
    assert run_cli(*args) == 0
    first = json.loads(capsys.readouterr().out)
    assert loads and all(kw.get("weights_only") is True for kw in loads)  # weights only
    results = {(r["attack"], r["eps"]): r for r in first["results"]}
    assert set(results) == {("fgsm", 0.05), ("pgd", 0.05), ("fgsm", 0.3), ("pgd", 0.3)}
    for r in first["results"]:
        assert r["samples"] == 60 and 0 <= r["accuracy"] <= first["clean"]
    # a larger budget never helps, and the iterative attack is at least as strong
    assert results[("pgd", 0.3)]["accuracy"] <= results[("pgd", 0.05)]["accuracy"]
    assert results[("pgd", 0.3)]["accuracy"] <= results[("fgsm", 0.3)]["accuracy"] + 1 / 60
    assert {c["name"] for c in first["masking"]}
    assert run_cli(*args) == 0
    second = json.loads(capsys.readouterr().out)
    assert all(r["cached"] for r in second["results"])
    assert [r["accuracy"] for r in second["results"]] == [r["accuracy"] for r in first["results"]]
    with Store.open(f"sqlite:///{trained}") as store:
        assert len(store.evals(1)) == 5  # clean + 2 attacks × 2 budgets, each stored once


def test_eval_table_and_bad_input(trained: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("eval", "1", "--db", trained, "--attacks", "fgsm", "--n", "30") == 0
    out = capsys.readouterr().out
    assert "SA" in out and "fgsm" in out and "accuracy in %" in out
    for bad in (
        ["--attacks", "cw"],
        ["--eps", "x/255"],
        ["--norm", "l1"],
        ["--checkpoint", "middle"],
    ):
        assert run_cli("eval", "1", "--db", trained, "--n", "10", *bad) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_a_run_without_checkpoint_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "c.db")
    with Store.open(f"sqlite:///{db}") as store:
        store.create_run(
            name="x",
            config={"eps": 0.3},
            method="caat",
            param=0.8,
            dataset="digits",
            model="cnn",
            eps=0.3,
            epochs_total=1,
        )
    assert run_cli("eval", "1", "--db", db) == 2
    assert "no best checkpoint" in capsys.readouterr().err


def test_stratified_order_balances_any_prefix() -> None:
    y = torch.tensor([0, 0, 0, 1, 1, 2, 0, 1, 2, 2])
    order = stratified_order(y)
    assert sorted(order.tolist()) == list(range(10))
    assert sorted(y[order[:3]].tolist()) == [0, 1, 2]
    assert sorted(y[order[:6]].tolist()) == [0, 0, 1, 1, 2, 2]
