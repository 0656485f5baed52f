"""The evaluation's torch-free rules: requests, plans with probes, tables, and eval jobs."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import update

from caat_app.errors import CaatError
from caat_app.evaluation.masking import summary
from caat_app.evaluation.plan import (
    EVAL_ATTACKS,
    eval_spec,
    large_budget,
    plan,
    settings_text,
    spec_from_json,
)
from caat_app.evaluation.tables import build_table, probe_lines, table_cells, tables_from_results
from caat_storage import EvalJob, EvalResult, Store, StoreError
from caat_storage.engine import make_engine
from caat_storage.models import utcnow


def result(attack: str, eps: float, acc: float, **kw: object) -> dict[str, object]:
    return {
        "checkpoint": "best",
        "weights": "epoch 3, step 30",
        "attack": attack,
        "norm": "linf",
        "eps": eps,
        "samples": 100,
        "accuracy": acc,
        "seconds": 1.0,
        "settings": settings_text(attack, eps),
        **kw,
    }


def test_plan_puts_clean_first_then_budgets_then_probes() -> None:
    spec = eval_spec(attacks="pgd,fgsm", budgets="8/255,16/255")
    jobs = plan(spec)
    assert [(j.attack, j.probe) for j in jobs[:5]] == [
        ("clean", False),
        ("pgd", False),
        ("fgsm", False),
        ("pgd", False),
        ("fgsm", False),
    ]
    assert [(j.attack, round(j.eps * 255)) for j in jobs[5:]] == [
        ("pgd-100", 8),
        ("pgd-100", 16),
        ("pgd", 64),
    ]
    assert all(j.probe for j in jobs[5:])
    # no pgd, no probes; an explicit pgd-100 is a column, not a probe
    assert [j.attack for j in plan(eval_spec(attacks="fgsm", budgets="0.1"))] == ["clean", "fgsm"]
    explicit = plan(eval_spec(attacks="pgd,pgd-100", budgets="0.1"))
    assert [(j.attack, j.probe) for j in explicit] == [
        ("clean", False),
        ("pgd", False),
        ("pgd-100", False),
        ("pgd", True),
    ]


@given(st.lists(st.floats(1e-4, 2.0), min_size=1, max_size=4), st.sampled_from(["linf", "l2"]))
def test_the_large_probe_is_large_or_absent(budgets: list[float], norm: str) -> None:
    spec = eval_spec(attacks="pgd", budgets=budgets, norm=norm)
    probes = [j for j in plan(spec) if j.probe and j.attack == "pgd"]
    big = large_budget(spec.budgets, norm)
    assert big <= 1.0 or norm == "l2"
    if probes:
        [probe] = probes
        assert probe.eps == big > max(spec.budgets)
        # what the masking report counts as very large: 4× the smallest, or L∞'s whole box
        assert probe.eps >= 4 * min(spec.budgets) or (norm == "linf" and probe.eps == 1.0)
    else:  # L∞ budgets already at the whole box
        assert norm == "linf" and max(spec.budgets) >= 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attacks": "cw"}, "--attacks: unknown cw"),
        ({"attacks": " , "}, "--attacks: name at least one"),
        ({"budgets": ""}, "--eps: give at least one"),
        ({"budgets": "0"}, "--eps: budgets must be positive"),
        ({"budgets": "nan"}, "--eps"),
        ({"budgets": "1/0"}, "--eps"),
        ({"norm": "l1"}, "--norm: unknown"),
        ({"checkpoint": "mid"}, "--checkpoint: unknown"),
        ({"n": -3}, "--n: expected a whole number"),
        ({"n": True}, "--n: expected a whole number"),
    ],
)
def test_bad_requests_name_their_option(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"attacks": "pgd", "budgets": "8/255"}
    with pytest.raises(CaatError, match=message.replace("(", r"\(")):
        eval_spec(**{**base, **kwargs})  # type: ignore[arg-type]


def test_specs_dedupe_and_survive_json() -> None:
    spec = eval_spec(attacks="PGD, fgsm,pgd", budgets="8/255,0.1,8/255", n=0, force=True)
    assert spec.attacks == ("pgd", "fgsm") and spec.budgets == (8 / 255, 0.1)
    assert spec_from_json(json.loads(json.dumps(spec.to_json()))) == spec
    with pytest.raises(CaatError):
        spec_from_json({**spec.to_json(), "attacks": ["nope"]})  # a tampered store is checked


def test_table_takes_the_grid_and_lists_the_rest_as_probes() -> None:
    rows = [
        result("clean", 0.0, 0.9),
        result("pgd", 0.1, 0.5),
        result("fgsm", 0.1, 0.6),
        result("pgd-100", 0.1, 0.3),
        result("pgd", 0.5, 0.2),
    ]
    table = build_table(rows, attacks=["fgsm", "pgd"], budgets=[0.1])
    header, body = table_cells(table)
    assert header == ["ε", "SA", "fgsm", "pgd"]
    assert body == [["0.1", "90.0", "60.0", "50.0"]]
    assert probe_lines(table) == [
        "probe pgd-100 at ε=0.1: 30.0%",
        "probe pgd at ε=0.5: 20.0%",
    ]
    checks = {c.name: c for c in table.checks}
    # the probe shows PGD-20 had not converged: 100 steps take 20 more points
    assert checks["converged"].passed is False and "20 steps 50.0%" in checks["converged"].detail
    assert checks["near zero at large ε"].passed is False  # 0.2 survives at 4× the budget
    assert table.seconds == 5.0
    everything = build_table(rows)  # no choice: every attack and budget, in zoo order
    assert everything.attacks == ["fgsm", "pgd", "pgd-100"] and everything.budgets == [0.1, 0.5]
    assert everything.cell("pgd-100", 0.5) is None and table_cells(everything)[1][1][-1] == "–"


def test_stored_results_group_into_tables_newest_first(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        run_id = store.create_run(
            name="r", config={"eps": 0.1}, method="caat", param=0.8, dataset="digits",
            model="cnn", eps=0.1, epochs_total=1,
        )  # fmt: skip
        store.add_evals(run_id, [result("clean", 0.0, 0.9), result("fgsm", 0.1, 0.7)])
        store.add_evals(
            run_id,
            [result("clean", 0.0, 0.8, samples=50), result("fgsm", 0.1, 0.6, samples=50)],
        )
        store.add_evals(run_id, [result("pgd", 0.2, 0.4)])  # joins the first group
        tables = tables_from_results(store.evals(run_id))
    assert [(t.samples, t.clean) for t in tables] == [(100, 0.9), (50, 0.8)]
    assert tables[0].attacks == ["fgsm", "pgd"] and tables[0].budgets == [0.1, 0.2]
    assert tables[0].to_json()["results"][0] == {"attack": "fgsm", "eps": 0.1, "accuracy": 0.7}


def test_every_attack_has_settings_and_help() -> None:
    from caat_app.evaluation.plan import ATTACK_HELP

    assert set(ATTACK_HELP) == set(EVAL_ATTACKS)
    for attack in EVAL_ATTACKS:
        assert json.loads(settings_text(attack, 0.1)) is not None


# --------------------------------------------------------------------------- the job table


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(f"sqlite:///{tmp_path / 'jobs.db'}")
    s.create_run(
        name="r", config={"eps": 0.1}, method="caat", param=0.8, dataset="digits",
        model="cnn", eps=0.1, epochs_total=1,
    )  # fmt: skip
    return s


def test_a_job_goes_queued_running_finished(store: Store) -> None:
    job = store.create_eval_job(1, {"attacks": ["fgsm"]}, total=3)
    assert store.eval_jobs(active=True)[0].id == job
    store.start_eval_job(job, 4242, total=3)
    store.eval_progress(job, done=1, current="fgsm at ε=0.1")
    record = store.get_eval_job(job)
    assert record is not None
    assert (record.status, record.done, record.total, record.current, record.pid) == (
        "running",
        1,
        3,
        "fgsm at ε=0.1",
        4242,
    )
    assert store.finish_eval_job(job, "finished")  # type: ignore[arg-type]
    assert not store.finish_eval_job(job, "failed")  # type: ignore[arg-type]  # ended once
    assert store.eval_jobs(active=True) == []
    with pytest.raises(StoreError, match="is finished"):
        store.start_eval_job(job, 1, total=3)
    with pytest.raises(StoreError, match="no run 99"):
        store.create_eval_job(99, {})


def test_jobs_go_with_their_run(store: Store) -> None:
    store.create_eval_job(1, {})
    store.add_evals(1, [result("clean", 0.0, 0.9)])
    store.delete_run(1)
    assert store.eval_jobs() == [] and store.evals(1) == []


def test_silent_eval_workers_are_reaped(store: Store) -> None:
    quiet, dead, alive = (store.create_eval_job(1, {}) for _ in range(3))
    for job, pid in ((quiet, 11), (dead, 12), (alive, 13)):
        store.start_eval_job(job, pid, total=1)
    engine = make_engine(store.url)  # the test's own engine: a heartbeat in the past
    with engine.begin() as conn:
        conn.execute(
            update(EvalJob)
            .where(EvalJob.id == quiet)  # type: ignore[arg-type]
            .values(heartbeat_at=utcnow() - timedelta(minutes=5))
        )
    engine.dispose()
    reaped = store.reap_stale_evals(timeout=60, is_alive=lambda pid: pid != 12)
    assert sorted(reaped) == sorted([quiet, dead])
    states = {j.id: (j.status, j.error or "") for j in store.eval_jobs()}
    assert states[alive] == ("running", "")
    assert states[quiet][0] == "failed" and "no heartbeat" in states[quiet][1]
    assert states[dead][0] == "failed" and "died" in states[dead][1]
    assert store.reap_stale(timeout=60) == []  # runs are another table


def test_evals_of_runs_is_one_mapping(store: Store) -> None:
    store.add_evals(1, [result("clean", 0.0, 0.9), result("fgsm", 0.1, 0.7)])
    got = store.evals_of_runs([1, 5])
    assert [r.attack for r in got[1]] == ["clean", "fgsm"] and got[5] == []
    assert all(isinstance(r, EvalResult) for r in got[1])
    assert store.evals_of_runs([]) == {}


def test_stored_tables_list_probes_under_the_report(tmp_path: Path) -> None:
    spec = eval_spec(attacks="fgsm,pgd", budgets="0.1,0.2")
    rows = [
        result(j.attack, j.eps, 0.5 if j.eps < 0.5 else 0.0, id=i) for i, j in enumerate(plan(spec))
    ]

    class Row:
        def __init__(self, data: dict[str, object]) -> None:
            self.__dict__.update(data)

    [table] = tables_from_results([Row(r) for r in rows])  # type: ignore[list-item]
    assert table.attacks == ["fgsm", "pgd"] and table.budgets == [0.1, 0.2]
    assert sorted((p["attack"], p["eps"]) for p in table.probes) == [
        ("pgd", 0.8),
        ("pgd-100", 0.1),
        ("pgd-100", 0.2),
    ]
    # asked for by name, pgd-100 is a column like any other
    named = [Row(result(a, 0.1, 0.5, id=i)) for i, a in enumerate(["clean", "pgd-100", "fgsm"])]
    assert tables_from_results(named)[0].attacks == ["fgsm", "pgd-100"]  # type: ignore[arg-type]


def test_report_lines_follow_a_table_and_a_clean_number_alone_gets_one() -> None:
    from caat_app.evaluation.plan import describe_spec, eval_spec
    from caat_app.evaluation.tables import BATCH_NOTE, report_lines

    rows = [
        {"attack": "clean", "eps": 0.0, "accuracy": 0.9, "samples": 50},
        {"attack": "fgsm", "eps": 0.1, "accuracy": 0.5, "samples": 50},
        {"attack": "pgd", "eps": 0.1, "accuracy": 0.6, "samples": 50},
        {"attack": "pgd-100", "eps": 0.1, "accuracy": 0.6, "samples": 50},
    ]
    common = {"checkpoint": "best", "norm": "linf", "seconds": 1.0}
    table = build_table([r | common for r in rows], attacks=["fgsm", "pgd"], budgets=[0.1])
    lines = report_lines(table)
    assert lines[0] == (summary(table.checks), True)  # pgd above fgsm is flagged
    assert len(lines) == 1 + len(table.checks) + len(table.probes)
    assert [flag for _, flag in lines[1:]].count(True) == 1
    assert lines[-1] == ("  probe pgd-100 at ε=0.1: 60.0%", False)
    assert report_lines(table, batchstats=True)[-1] == (f"  {BATCH_NOTE}", False)

    alone = build_table([rows[0] | common])
    assert report_lines(alone) == [("clean accuracy 90.0%; no attack measured yet", False)]

    spec = eval_spec(attacks="pgd,autoattack", budgets="8/255,0.3", n=0, force=True)
    assert describe_spec(json.dumps(spec.to_json())) == (
        "pgd,autoattack · ε=8/255,0.3 L∞ · all images · best · measured again"
    )
    assert describe_spec("{not json") == "{not json"
