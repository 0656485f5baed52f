"""`caat eval`: the attack table of a saved run, stored and reused, with its masking report."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

import pytest
import torch
from helpers import run_cli

from caat_app.evaluation.runner import stratified_order
from caat_storage import Store, StoreError


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
    checks = {c["name"]: c for c in first["masking"]}
    # pgd brings its probes: 100 steps at each budget, and pgd at 4× the largest (capped at 1)
    probes = {(r["attack"], r["eps"]) for r in first["probes"]}
    assert probes == {("pgd-100", 0.05), ("pgd-100", 0.3), ("pgd", 1.0)}
    assert (
        checks["converged"]["passed"] is not None and "100 steps" in checks["converged"]["detail"]
    )
    assert checks["near zero at large ε"]["passed"] is True  # ε=1 L∞ can paint any image grey
    assert run_cli(*args) == 0
    second = json.loads(capsys.readouterr().out)
    assert all(r["cached"] for r in second["results"] + second["probes"])
    assert [r["accuracy"] for r in second["results"]] == [r["accuracy"] for r in first["results"]]
    with Store.open(f"sqlite:///{trained}") as store:
        # clean + 2 attacks × 2 budgets + 3 probes, each stored once
        assert len(store.evals(1)) == 8
        jobs = store.eval_jobs(1)
        assert [j.status for j in jobs] == ["finished", "finished"]
        assert all(j.done == j.total == 8 for j in jobs)


def test_eval_table_and_bad_input(trained: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("eval", "1", "--db", trained, "--attacks", "fgsm", "--n", "30", "--table") == 0
    out = capsys.readouterr().out
    assert "SA" in out and "fgsm" in out and "accuracy in %" in out
    with Store.open(f"sqlite:///{trained}") as store:
        before = (len(store.evals(1)), len(store.eval_jobs()))
    for bad in (
        ["--attacks", "cw"],
        ["--attacks", ","],
        ["--eps", "x/255"],
        ["--eps", "0"],
        ["--eps", "-8/255"],
        ["--norm", "l1"],
        ["--checkpoint", "middle"],
        ["--n", "-1"],
        ["--json", "--csv"],
        ["--table", "--json"],
    ):
        assert run_cli("eval", "1", "--db", trained, "--n", "10", *bad) == 2, bad
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, bad
    with Store.open(f"sqlite:///{trained}") as store:  # bad input wrote nothing
        assert (len(store.evals(1)), len(store.eval_jobs())) == before


def test_several_runs_print_side_by_side(trained: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run_cli(
            "train",
            "--db",
            trained,
            "--epochs",
            "1",
            "--model",
            "linear",
            "--method",
            "vanilla",
            "--lam",
            "0.5",
            "--attack-steps",
            "2",
            "--eval-steps",
            "2",
            "--name",
            "second",
        )
        == 0
    )
    capsys.readouterr()
    args = ("eval", "1", "second", "--db", trained, "--attacks", "fgsm", "--eps", "0.1,0.2")
    assert run_cli(*args, "--n", "40", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in report] == [1, 2] and report[1]["name"] == "second"
    assert run_cli(*args, "--n", "40") == 0
    out = capsys.readouterr().out
    assert "runs side by side" in out
    rows = [line for line in out.splitlines() if "second" in line and "│" in line]
    assert len(rows) == 2  # one row per budget for the second run, in the same table
    for r in report:
        for budget in (0.1, 0.2):
            acc = next(x["accuracy"] for x in r["results"] if x["eps"] == budget)
            assert f"{100 * acc:.1f}" in out


def test_csv_has_one_row_per_measurement(trained: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("eval", "1", "--db", trained, "--attacks", "fgsm,mifgsm", "--eps", "0.1", "--n", "40")
    assert run_cli(*args, "--csv") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert list(rows[0])[:3] == ["run", "checkpoint", "weights"]
    assert rows[0]["weights"].startswith("epoch ")  # which weights `best` held
    assert sorted(r["attack"] for r in rows) == ["fgsm", "mifgsm"]
    assert all(r["probe"] == "False" and 0 <= float(r["accuracy"]) <= 1 for r in rows)


def test_front_on_an_evaluated_attack(trained: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("eval", "1", "--db", trained, "--attacks", "fgsm", "--eps", "0.25", "--n", "50")
    assert run_cli(*args, "--json") == 0
    measured = json.loads(capsys.readouterr().out)
    assert run_cli("front", "--db", trained, "--attack", "fgsm", "--eps", "0.25", "--json") == 0
    captured = capsys.readouterr()
    rep = json.loads(captured.out)
    [point] = [p for p in rep["points"] if 1 in p["run_ids"]]
    assert point["aa"] == measured["results"][0]["accuracy"]
    assert point["sa"] == measured["clean"]  # SA from the same 50 images, not training's
    assert "fgsm L∞ accuracy at ε = 0.25, 50 test images" in rep["axes"]["aa"]
    assert run_cli("front", "--db", trained, "--attack", "square", "--eps", "0.25") == 2
    err = capsys.readouterr().err
    assert "no run here was evaluated with square" in err and err.count("\n") == 1
    assert run_cli("front", "--db", trained, "--eps", "0.25") == 2
    assert "give --attack too" in capsys.readouterr().err


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


def test_a_stopped_evaluation_keeps_what_it_finished(trained: str) -> None:
    from caat_app.evaluation.plan import eval_spec
    from caat_app.runs.worker import StopFlag, execute_eval

    spec = eval_spec(attacks="fgsm,pgd", budgets="0.15", n=30, force=True)
    with Store.open(f"sqlite:///{trained}") as store:
        job = store.create_eval_job(1, spec.to_json())
        flag = StopFlag()

        def stop_after_clean(index: int, total: int, measurement: object) -> None:
            if index == 1:
                flag.set()  # as SIGINT would, while fgsm runs

        status, rows = execute_eval(store, job, flag, stop_after_clean)
        assert (status, rows) == ("cancelled", [])
        record = store.get_eval_job(job)
        assert record is not None and record.status == "cancelled" and record.done == 1
        mine = [r for r in store.evals(1) if r.samples == 30 and r.eps in (0.0, 0.15)]
        assert [r.attack for r in mine] == ["clean"]  # no partial fgsm number
        with pytest.raises(StoreError, match="is cancelled"):
            execute_eval(store, job, StopFlag())  # an ended job is not run again


def test_a_failing_evaluation_ends_failed_with_its_reason(tmp_path: Path) -> None:
    from caat_app.errors import CaatError
    from caat_app.evaluation.plan import eval_spec
    from caat_app.runs.manage import start_eval
    from caat_app.runs.worker import StopFlag, execute_eval

    with Store.open(f"sqlite:///{tmp_path / 'f.db'}") as store:
        run_id = store.create_run(
            name="x",
            config={"eps": 0.3},
            method="caat",
            param=0.8,
            dataset="digits",
            model="cnn",
            eps=0.3,
            epochs_total=1,
        )
        spec = eval_spec(attacks="fgsm", budgets="0.1", n=10)
        run = store.get_run(run_id)
        assert run is not None
        with pytest.raises(CaatError, match="no best checkpoint yet"):
            start_eval(store, run, spec, launch=lambda *a, **k: pytest.fail("launched"))
        assert store.eval_jobs() == []  # refused before anything was recorded
        job = store.create_eval_job(run_id, spec.to_json())
        with pytest.raises(CaatError):
            execute_eval(store, job, StopFlag())
        record = store.get_eval_job(job)
        assert record is not None and record.status == "failed"
        assert record.error is not None and "no best checkpoint" in record.error


def test_a_launch_that_fails_ends_the_job_failed(trained: str) -> None:
    from caat_app.errors import CaatError
    from caat_app.evaluation.plan import eval_spec
    from caat_app.runs.manage import start_eval

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("no python here")

    with Store.open(f"sqlite:///{trained}") as store:
        run = store.get_run(1)
        assert run is not None
        with pytest.raises(CaatError, match="no python here"):
            start_eval(store, run, eval_spec(attacks="fgsm", budgets="0.1"), launch=broken)
        job = store.eval_jobs()[0]
        assert job.status == "failed" and "no python here" in (job.error or "")


@pytest.mark.slow
def test_detach_evaluates_in_a_worker_process(
    trained: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("eval", "1", "--db", trained, "--attacks", "fgsm", "--eps", "0.12", "--n", "20")
    assert run_cli(*args, "--detach") == 0
    assert "started" in capsys.readouterr().out
    with Store.open(f"sqlite:///{trained}") as store:
        job = store.eval_jobs()[0]
        deadline = time.monotonic() + 120
        while job.status in {"queued", "running"} and time.monotonic() < deadline:
            time.sleep(0.3)
            job = store.get_eval_job(job.id)  # type: ignore[arg-type]
            assert job is not None
        assert job.status == "finished", job.error
        assert job.pid is not None and job.pid != os.getpid()
        log = (Path(store.get_run(1).run_dir) / f"eval-{job.id}.log").read_text()  # type: ignore[union-attr]
        assert "fgsm at eps=0.12" in log
    assert run_cli(*args, "--json") == 0  # read back, not measured again
    report = json.loads(capsys.readouterr().out)
    assert report["results"][0]["cached"] is True


def test_stratified_order_balances_any_prefix() -> None:
    y = torch.tensor([0, 0, 0, 1, 1, 2, 0, 1, 2, 2])
    order = stratified_order(y)
    assert sorted(order.tolist()) == list(range(10))
    assert sorted(y[order[:3]].tolist()) == [0, 1, 2]
    assert sorted(y[order[:6]].tolist()) == [0, 0, 1, 1, 2, 2]


def test_show_lists_the_stored_evaluations(
    trained: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("eval", "1", "--db", trained, "--attacks", "fgsm,pgd", "--eps", "0.12", "--n", "25")
    assert run_cli(*args, "--json") == 0
    measured = json.loads(capsys.readouterr().out)
    assert run_cli("show", "1", "--db", trained, "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    [table] = [t for t in shown["evaluations"] if t["samples"] == 25]
    assert table["clean"] == measured["clean"]
    assert {(r["attack"], r["eps"]) for r in table["results"]} == {("fgsm", 0.12), ("pgd", 0.12)}
    assert {(p["attack"], p["eps"]) for p in table["probes"]} == {("pgd-100", 0.12), ("pgd", 0.48)}
    assert run_cli("show", "1", "--db", trained) == 0
    out = capsys.readouterr().out
    assert "accuracy in % on 25 test images" in out and "probe pgd at ε=0.48" in out


def test_show_tells_what_is_being_evaluated_and_what_only_has_its_clean_number(
    trained: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from caat_app.evaluation.plan import eval_spec
    from caat_app.runs.worker import StopFlag, execute_eval
    from caat_storage import RunStatus

    spec = eval_spec(attacks="fgsm,square", budgets="0.2", n=17)
    with Store.open(f"sqlite:///{trained}") as store:
        stopped = store.create_eval_job(1, spec.to_json())
        flag = StopFlag()

        def stop_after_clean(index: int, total: int, measurement: object) -> None:
            if index == 1:
                flag.set()

        execute_eval(store, stopped, flag, stop_after_clean)
        running = store.create_eval_job(1, spec.to_json())
        store.start_eval_job(running, os.getpid(), total=4)
        store.eval_progress(running, done=2, current="square at ε=0.2")
    try:
        assert run_cli("show", "1", "--db", trained) == 0
        out = capsys.readouterr().out
        assert f"evaluation {running} running: 2/4 measured, now square at ε=0.2" in out
        assert f"caat cancel --eval {running}" in out and f"evaluation {stopped} " not in out
        assert "no attack measured yet" in out  # the stopped job's clean-only table
        assert run_cli("show", "1", "--db", trained, "--json") == 0
        [job] = json.loads(capsys.readouterr().out)["evaluating"]
        assert (job["id"], job["done"], job["total"]) == (running, 2, 4)
        assert job["spec"]["attacks"] == ["fgsm", "square"] and job["spec"]["n"] == 17
    finally:
        with Store.open(f"sqlite:///{trained}") as store:
            store.finish_eval_job(running, RunStatus.CANCELLED)


def test_results_of_older_weights_are_not_reused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "w.db")
    train = ("train", "--db", db, "--epochs", "1", "--model", "linear", "--attack-steps", "2")
    assert run_cli(*train, "--eval-steps", "2") == 0
    args = ("eval", "1", "--db", db, "--attacks", "fgsm", "--eps", "0.1", "--n", "20", "--json")
    assert run_cli(*args) == 0
    capsys.readouterr()
    with Store.open(f"sqlite:///{db}") as store:
        best = Path(store.get_run(1).run_dir) / "best.pt"  # type: ignore[union-attr]
    state = torch.load(best, weights_only=True)
    state["epoch"] += 5  # as if training went on and saved a new best
    torch.save(state, best)
    assert run_cli(*args) == 0
    again = json.loads(capsys.readouterr().out)
    assert not any(r["cached"] for r in again["results"])
    assert run_cli("show", "1", "--db", db, "--json") == 0
    shown = json.loads(capsys.readouterr().out)["evaluations"]
    assert [t["weights"].split(",")[0] for t in shown] == ["epoch 6", "epoch 1"]  # newest first


def test_cancel_an_evaluation_from_the_command_line(
    trained: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from caat_app.evaluation.plan import eval_spec

    with Store.open(f"sqlite:///{trained}") as store:
        job = store.create_eval_job(1, eval_spec(attacks="fgsm", budgets="0.1").to_json())
    assert run_cli("cancel", "--eval", str(job), "--db", trained) == 0  # queued: ends now
    assert "asked evaluation" in capsys.readouterr().out
    with Store.open(f"sqlite:///{trained}") as store:
        assert store.get_eval_job(job).status == "cancelled"  # type: ignore[union-attr]
    assert run_cli("cancel", "--eval", str(job), "--db", trained) == 2  # already over
    assert "is cancelled, not running" in capsys.readouterr().err
    for args in (["--eval", "999"], [], ["1", "--eval", str(job)]):
        assert run_cli("cancel", *args, "--db", trained) == 2
        assert capsys.readouterr().err.count("\n") == 1


def test_a_sweep_is_evaluated_side_by_side_and_feeds_its_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(tmp_path / "s.db")
    tiny = ("--epochs", "1", "--model", "linear", "--attack-steps", "2", "--eval-steps", "2")
    sweep = ("sweep", "--db", db, "--name", "tiny", "--method", "vanilla,caat")
    assert run_cli(*sweep, "--lam", "0.5", "--gamma", "0.8", *tiny) == 0
    queued = ("sweep", "--db", db, "--name", "later", "--method", "caat", "--detach")
    assert run_cli(*queued, *tiny) == 0
    capsys.readouterr()
    axis = ("--attack", "fgsm", "--eps", "0.1")
    assert run_cli("front", "--db", db, "--sweep", "tiny", *axis) == 2
    assert "caat eval --sweep tiny --attacks fgsm --eps 0.1 --norm linf" in capsys.readouterr().err
    measure = ("--attacks", "fgsm", "--eps", "0.1", "--n", "20", "--json")
    assert run_cli("eval", "1", "--db", db, "--sweep", "tiny", *measure) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in report] == [1, 2]  # run 1, named and in the sweep, once
    assert run_cli("front", "--db", db, "--sweep", "tiny", *axis, "--json") == 0
    front = json.loads(capsys.readouterr().out)
    assert len(front["points"]) == 2 and front["axes"]["missing"] == []
    from caat_app.runs import launcher

    started: list[dict[str, str] | None] = []
    monkeypatch.setattr(launcher, "list_gpus", lambda: [])
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(
        launcher, "launch_eval_worker", lambda url, job, folder, env=None: started.append(env)
    )
    assert run_cli("eval", "--db", db, "--sweep", "tiny", "--detach") == 0
    assert started == [{"OMP_NUM_THREADS": "4"}] * 2  # two CPU workers share the cores
    assert run_cli("eval", "1", "--db", db, "--detach") == 0
    assert started[-1] == {}  # one worker: the whole machine
    for args, why in (
        (["--sweep", "nope"], "no sweep named 'nope'"),
        (["--sweep", "later"], "no run of 'later' has finished"),
        ([], "name the runs"),
    ):
        assert run_cli("eval", "--db", db, *args) == 2
        err = capsys.readouterr().err
        assert why in err and err.count("\n") == 1
