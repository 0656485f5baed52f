"""`caat paper`: the catalogue of the paper's experiments, the dry run, the GPU-hour estimate,
Table 1's numbers, the computed verdicts, resuming, and bad input. Nothing here trains."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import run_cli
from hypothesis import given
from hypothesis import strategies as st

from caat_app.attacks.registry import TRAINING_ATTACKS
from caat_app.config import build_config
from caat_app.errors import CaatError
from caat_app.evaluation.plan import EVAL_ATTACKS, eval_spec, settings_text
from caat_app.method.registry import LOSSES
from caat_app.paper import estimate as est
from caat_app.paper import table1
from caat_app.paper.catalogue import EXPERIMENTS
from caat_app.paper.report import budget_verdict, epoch_means, mu_verdict, tail_mean
from caat_app.paper.run import EvalProgress, has_evaluation, queue, run_evaluations
from caat_app.paper.scale import RATIO, Overrides, Plan, PlannedRun, resolve
from caat_app.presets import PRESETS
from caat_storage import RunStatus, Store

ROOT = Path(__file__).resolve().parents[1]
IDS = [
    "fig2",
    "fig3",
    "fig4",
    "fig5",
    "fig6a",
    "fig6b",
    "fig6c",
    "fig7a",
    "fig7b",
    "fig8",
    "table1",
]
PAPER_LAMBDAS = [0.0, 0.25, 0.5, 0.75, 1.0]
PAPER_GAMMAS = [0.7, 0.75, 0.8, 0.85, 0.9, 1.0]


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "store" / "caat.db")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'caat.db'}") as opened:
        yield opened


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    assert run_cli(*args) == 0
    return json.loads(capsys.readouterr().out)


# -- the catalogue ----------------------------------------------------------------------------


def test_every_experiment_is_listed_and_available(
    capsys: pytest.CaptureFixture[str], db: str
) -> None:
    listed = _json(capsys, "paper", "--json", "--db", db)
    assert [e["id"] for e in listed] == IDS
    assert all(e["available"] and e["why_not"] is None for e in listed)
    assert all(e["trains"] and e["measures"] for e in listed)
    assert run_cli("paper", "--db", db) == 0
    text = capsys.readouterr().out
    assert all(i in text for i in IDS) and "not yet available" not in text
    assert not Path(db).exists()


@pytest.mark.parametrize(("name", "loss"), [("fig6a", "ce"), ("fig6b", "trades"), ("fig6c", "clp")])
def test_fig6_grids_are_the_papers_lambdas_gammas_and_loss(name: str, loss: str) -> None:
    (grid,) = EXPERIMENTS[name].grids
    assert (list(grid.lam), list(grid.gamma)) == (PAPER_LAMBDAS, PAPER_GAMMAS)
    assert (grid.preset, dict(grid.fields)) == ("paper-cifar10-r18", {"loss": (loss,)})
    runs = resolve(name).runs
    assert sorted(r.config.lam for r in runs if r.config.method == "vanilla") == PAPER_LAMBDAS
    assert sorted(r.config.gamma for r in runs if r.config.method == "caat") == PAPER_GAMMAS
    assert {(r.config.loss, r.config.preset, r.config.dataset) for r in runs} == {
        (loss, "paper-cifar10-r18", "cifar10")
    }


def test_table1_has_the_papers_attacks_budgets_and_numbers() -> None:
    (request,) = EXPERIMENTS["table1"].evaluations
    assert request.attacks == ("pgd", "apgd-ce", "mifgsm", "fab", "fab-t", "fgsm")
    assert table1.PAPER_COLUMNS == ("PGD", "AutoPGD", "MIFGSM", "FAB", "T-FAB", "FGSM")
    assert [round(b * 255, 9) for b in request.budgets] == [8, 16, 24, 32]
    assert {g.preset for g in EXPERIMENTS["table1"].grids} == {
        "paper-cifar10-r18",
        "paper-cifar10-r34",
    }
    # (Vanilla AT, CA-AT), read off the paper's Table 1.
    assert table1.paper_cell("resnet18", "clean", 8 / 255) == (0.8239, 0.8659)
    assert table1.paper_cell("resnet18", "apgd-ce", 16 / 255) == (0.2486, 0.5555)
    assert table1.paper_cell("resnet18", "fab", 32 / 255) == (0.6836, 0.6402)
    assert table1.paper_cell("resnet34", "fgsm", 32 / 255) == (0.088, 0.7616)
    assert table1.paper_cell("resnet34", "fab-t", 24 / 255) == (0.5174, 0.5142)
    assert table1.paper_cell("resnet18", "pgd", 12 / 255) is None
    assert table1.paper_cell("cnn", "pgd", 8 / 255) is None
    assert "10-step APGD" in table1.protocol_text() and "2/255" in table1.protocol_text()


def test_every_grid_names_known_presets_losses_and_attacks() -> None:
    for exp in EXPERIMENTS.values():
        for grid in exp.grids:
            assert grid.preset in PRESETS
            assert set(grid.fields.get("loss", ())) <= set(LOSSES)
            assert set(grid.fields.get("attack", ())) <= set(TRAINING_ATTACKS)
        for request in exp.evaluations:
            assert set(request.attacks) <= set(EVAL_ATTACKS)


def test_fig3_fig8_and_table1_runs_are_the_papers_settings() -> None:
    fig3 = resolve("fig3").runs
    a = [r for r in fig3 if r.figure == "a"]
    b = [r for r in fig3 if r.figure == "b"]
    assert {(r.config.dataset, r.config.model) for r in a} == {
        (d, m) for d in ("cifar10", "cifar100") for m in ("resnet18", "resnet34")
    }
    assert {r.config.attack for r in a} == {"pgd"}
    assert {r.config.attack for r in b} == {"apgd-ce", "apgd-dlr", "apgd-t"}
    assert {(r.config.method, r.config.param) for r in fig3} == {
        ("vanilla", 0.5),
        ("vanilla", 1.0),
        ("caat", 0.8),
        ("caat", 0.9),
    }
    fig8 = resolve("fig8").runs
    assert sorted({round(r.config.eps * 255, 9) for r in fig8}) == [8, 12]
    assert {(r.config.method, r.config.param) for r in fig8} == {("vanilla", 0.5), ("caat", 0.8)}
    assert len(resolve("table1").runs) == 4


# -- the dry run ------------------------------------------------------------------------------


def test_dry_run_json_resolves_the_preset_and_stores_nothing(
    capsys: pytest.CaptureFixture[str], db: str
) -> None:
    data = _json(capsys, "paper", "fig6b", "--dry-run", "--json", "--db", db)
    assert data["sweep"] == "paper-fig6b" and len(data["runs"]) == 11
    for run in data["runs"]:
        assert run["preset"] == "paper-cifar10-r18"
        for key, value in PRESETS["paper-cifar10-r18"].values.items():
            assert run[key] == (pytest.approx(value) if isinstance(value, float) else value), key
        swept = {k: run[k] for k in ("method", "lam", "gamma", "loss", "preset")}
        rebuilt = build_config(swept).model_dump(mode="json")
        assert {k: v for k, v in run.items() if k not in {"name", "panel"}} == {
            k: v for k, v in rebuilt.items() if k != "name"
        }
    assert len(data["evaluations"]) == 11
    assert {tuple(e["attacks"]) for e in data["evaluations"]} == {("autoattack", "pgd")}
    assert {(tuple(e["budgets"]), e["n"]) for e in data["evaluations"]} == {((8 / 255,), 10_000)}
    assert data["estimate"]["basis"] == "analytic" and data["estimate"]["total_gpu_hours"] > 0
    assert not Path(db).exists() and not Path(os.environ["CAAT_HOME"]).exists()


def test_smoke_dry_run_shrinks_onto_digits_keeping_budget_ratios(
    capsys: pytest.CaptureFixture[str], db: str
) -> None:
    data = _json(capsys, "paper", "fig8", "--scale", "smoke", "--dry-run", "--json", "--db", db)
    assert data["sweep"] == "paper-fig8-smoke"
    assert {(r["dataset"], r["model"], r["preset"]) for r in data["runs"]} == {
        ("digits", "cnn", None)
    }
    assert sorted({r["eps"] for r in data["runs"]}) == pytest.approx([0.3, 0.45])
    budgets = data["evaluations"][0]["budgets"]
    assert budgets == pytest.approx([k / 255 * RATIO for k in (4, 8, 12, 16, 24, 32)])
    assert any("smoke scale" in note for note in data["notes"])
    assert not Path(db).exists()


def test_smoke_fronts_keep_both_families_with_several_points() -> None:
    for name in ("fig6a", "fig6b", "fig6c", "fig7a", "fig7b"):
        runs = resolve(name, "smoke").runs
        counts = {m: sum(r.config.method == m for r in runs) for m in ("vanilla", "caat")}
        assert min(counts.values()) >= 3
        assert {r.evaluations[0].attacks[0] for r in runs} == {"autoattack-fast"}


# -- the estimate -----------------------------------------------------------------------------


def _cfg(**options: Any) -> Any:
    base = {"dataset": "cifar10", "model": "resnet18", "epochs": 2, "batch_size": 1000}
    base |= {"attack_steps": 10, "eval_steps": 10, "eval_n": 500, "method": "vanilla"}
    return build_config({**base, **options})


def test_training_passes_are_the_stated_closed_form() -> None:
    assert est.train_passes(_cfg(), 10) == 2 * 10 + 6  # g_c 3, attack 2k, g_a 3
    assert est.train_passes(_cfg(loss="trades"), 10) == 2 * 10 + 6 + 1 + 2
    assert est.train_passes(_cfg(loss="clp"), 10) == 2 * 10 + 6 + 2
    assert est.train_passes(_cfg(attack="fgsm"), 10) == 2 * 1 + 6
    assert est.train_passes(_cfg(attack="apgd-t"), 10) == 2 * 9 * 10 + 6
    # 2 epochs × (45 full batches of 1000 × 26 + 500 val and 500 test × (2·10 + 2))
    assert est.train_forward_equivalents(_cfg()) == 2 * (45_000 * 26 + 1_000 * 22)


def test_attack_passes_are_the_stated_closed_form() -> None:
    assert est.attack_passes("pgd", 10) == 2 * 20 + 1
    assert est.attack_passes("fgsm", 10) == 3
    assert est.attack_passes("apgd-t", 10) == 9 * 2 * 100 + 1
    assert est.attack_passes("fab", 100) == 100 * (2 + 2 * 100) + 1
    assert est.attack_passes("autoattack", 10) == 200 + 1800 + 9 * 100 * 4 + 5000 + 1
    assert est.attack_passes("autoattack-fast", 10) == 200 + 1800 + 1


def _plan(cfg: Any, *specs: Any) -> Plan:
    run = PlannedRun(config=cfg, panel="p", figure="", evaluations=specs, paper_model="resnet18")
    return Plan(EXPERIMENTS["fig6a"], "paper", "paper-test", (run,))


def test_analytic_hours_are_work_times_flop_over_the_gpus_share() -> None:
    spec = eval_spec(attacks="pgd", budgets=[8 / 255], n=1000)
    gpu = est.ReferenceGpu("X", 100.0, 0.5)
    got = est.estimate(_plan(_cfg(method="caat"), spec), gpu)
    flop = 2 * 0.56e9
    train_fe = 2 * (45_000 * 26 + 1_000 * 22)
    projection = 2 * 45 * 8 * 11.17e6  # 90 steps × 8·P
    assert got["train_gpu_hours"] == pytest.approx((train_fe * flop + projection) / 50e12 / 3600)
    # clean, PGD-20, and the probes PGD-100 and PGD-20 at 4 × 8/255
    eval_fe = 1000 * (1 + 41 + 201 + 41)
    assert got["eval_gpu_hours"] == pytest.approx(eval_fe * flop / 50e12 / 3600)
    assert got["basis"] == "analytic" and "X, 50% of 100 bf16 TFLOP/s" in got["basis_text"]


@given(st.integers(1, 300), st.floats(0.05, 1.0))
def test_hours_grow_with_epochs_and_shrink_with_utilisation(epochs: int, share: float) -> None:
    one = est.estimate(_plan(_cfg(epochs=1)), est.ReferenceGpu("X", 300.0, 1.0))
    many = est.estimate(_plan(_cfg(epochs=epochs)), est.ReferenceGpu("X", 300.0, share))
    assert many["train_gpu_hours"] == pytest.approx(one["train_gpu_hours"] * epochs / share)


def _bench_file(tmp_path: Path, model: str = "cnn") -> Path:
    path = tmp_path / "bench.json"
    report = {
        "device": "cpu",
        "model": model,
        "dataset": "digits",
        "batch_size": 128,
        "attack": "pgd-10 linf eps=0.3",
        "images_per_sec": {"clean": 3000.0, "vanilla": 1000.0, "caat": 900.0},
        "evaluation": {"model": model, "attacks": {"pgd": {"images_per_sec": 500.0}}},
    }
    path.write_text(json.dumps(report))
    return path


def test_a_matching_bench_report_gives_measured_hours(tmp_path: Path) -> None:
    cfg = build_config({"epochs": 1, "batch_size": 128, "eval_n": 100, "method": "caat"})
    spec = eval_spec(attacks="pgd", budgets=[0.3], n=100)
    got = est.estimate(_plan(cfg, spec), bench=est.read_bench(_bench_file(tmp_path)))
    # 9 batches of 128 at CA-AT's 900 img/s; 200 images × 22 measured at 1000 × 26 fe/s
    train = 9 * 128 / 900 + 200 * 22 / (1000 * 26)
    evals = 100 * (1 + 41 + 201 + 41) / (500 * 41)  # at PGD-20's measured 500 img/s
    assert got["basis"] == "measured" and "cnn on digits" in got["basis_text"]
    assert got["train_gpu_hours"] * 3600 == pytest.approx(train)
    assert got["eval_gpu_hours"] * 3600 == pytest.approx(evals)
    other = est.estimate(_plan(cfg, spec), bench=est.read_bench(_bench_file(tmp_path, "linear")))
    assert other["basis"] == "analytic" and "matches no run" in other["basis_text"]


# -- Table 1 and the verdicts -----------------------------------------------------------------


def test_comparison_rows_put_the_papers_numbers_beside_caats() -> None:
    measured = {
        table1.cell_key("vanilla", "clean", 0.3): 0.9,
        table1.cell_key("caat", "clean", 0.3): 0.95,
        table1.cell_key("vanilla", "pgd", 0.3): 0.4,
        table1.cell_key("caat", "pgd", 0.3): 0.3,
    }
    rows = table1.comparison_rows("resnet18", measured, attacks=["pgd"], budgets=[0.3], ratio=RATIO)
    assert [r["attack"] for r in rows] == ["SA", "PGD"]
    assert (rows[1]["paper_vanilla"], rows[1]["paper_caat"]) == (0.4703, 0.7442)  # 8/255
    assert (rows[1]["caat_vanilla"], rows[1]["caat_caat"]) == (0.4, 0.3)
    assert table1.wins(rows, "caat_vanilla", "caat_caat") == (1, 2)
    assert table1.wins(rows, "paper_vanilla", "paper_caat") == (2, 2)
    assert table1.row_cells(rows[1]) == ["PGD", "0.3 ↔ 8/255", "47.0", "74.4", "40.0", "30.0"]


def test_mu_and_budget_verdicts_say_what_the_numbers_say() -> None:
    steps = [SimpleNamespace(epoch=e, mu=m) for e, m in [(1, 2.0), (1, 4.0), (2, None), (2, 1.0)]]
    assert epoch_means(steps) == ([1, 2], [3.0, 1.0])
    assert tail_mean([4.0, 3.0, 2.0, 1.0, 1.0]) == 1.0 and tail_mean([]) is None

    def line(method: str, tail: float) -> dict[str, Any]:
        return {"method": method, "label": f"{method} {tail}", "tail": tail}

    panels = [
        {"panel": "A", "lines": [line("vanilla", 2.0), line("caat", 1.0)]},
        {"panel": "B", "lines": [line("vanilla", 2.0), line("caat", 3.0)]},
        {"panel": "C", "lines": [line("vanilla", 2.0)]},
    ]
    said = mu_verdict(panels)
    assert "A: CA-AT's μ is below" in said[0] and "B: CA-AT's μ is not below" in said[1]
    assert "not both families" in said[2] and said[-1] == "CA-AT keeps μ lower in 1 of 2 panels."
    lines = [
        {
            "attack": "pgd",
            "train_eps": 0.3,
            "method": "vanilla",
            "eps": [0, 1],
            "accuracy": [0.9, 0.2],
        },
        {
            "attack": "pgd",
            "train_eps": 0.3,
            "method": "caat",
            "eps": [0, 1],
            "accuracy": [0.95, 0.1],
        },
    ]
    assert budget_verdict(lines) == [
        "pgd, trained at ε=0.3: CA-AT is at least Vanilla AT at 1 of 2 budgets (SA included)."
    ]


# -- reports from a hand-filled store ---------------------------------------------------------


def _finish_with_evals(store: Store, plan_: Plan, accuracy: dict[str, float]) -> None:
    """Every run finished, every planned measurement stored at its method's accuracy."""
    from caat_app.evaluation.plan import plan as measurements

    new, _ = queue(store, plan_)
    for run_id, planned in zip(new, plan_.runs, strict=True):
        store.finish(run_id, RunStatus.FINISHED)
        rows = [
            {
                "checkpoint": "best",
                "attack": m.attack,
                "norm": spec.norm,
                "eps": m.eps,
                "samples": spec.n,
                "accuracy": accuracy["clean" if m.attack == "clean" else planned.config.method],
                "seconds": 1.0,
                "settings": settings_text(m.attack, m.eps),
            }
            for spec in planned.evaluations
            for m in measurements(spec)
        ]
        store.add_evals(run_id, rows)


def test_table1_report_sets_caats_numbers_beside_the_papers(store: Store, tmp_path: Path) -> None:
    from caat_app.paper.report import build_report, write_outputs

    plan_ = resolve("table1", "smoke", Overrides(eval_n=100))
    _finish_with_evals(store, plan_, {"clean": 0.9, "vanilla": 0.5, "caat": 0.6})
    report = build_report(store, plan_)
    (table,) = report["tables"]
    sa = table["rows"][0]
    assert (sa["paper_vanilla"], sa["paper_caat"], sa["caat_vanilla"]) == (0.8239, 0.8659, 0.9)
    assert len(table["rows"]) == 1 + 6 * 4 and report["missing"] == []
    # The paper's CA-AT ties or wins 20 of its 25 ResNet-18 cells (FAB above 8/255, T-FAB
    # at 24 and 32/255 are Vanilla AT's); caat's filled-in CA-AT wins all 24 attacked ones.
    assert report["verdict"][0].endswith("in 25 of 25 cells; the paper's in 20 of 25.")
    assert any("not comparable" in s for s in report["verdict"])
    written = {p.name for p in write_outputs(report, tmp_path / "out", "table1-smoke")}
    assert written == {"table1-smoke.json", "table1-smoke.csv", "table1-smoke-verdict.txt"}


def test_fig3_report_draws_mu_per_epoch_and_judges_it(store: Store, tmp_path: Path) -> None:
    from caat_app.paper.report import build_report, write_outputs

    plan_ = resolve("fig3", "smoke", Overrides(epochs=2))
    new, _ = queue(store, plan_)
    for run_id, planned in zip(new, plan_.runs, strict=True):
        # μ grows with the budget for Vanilla AT only; CA-AT's stays at half of ε = 0.3's
        cfg = planned.config
        mu = cfg.eps if cfg.method == "vanilla" else 0.15
        steps = [
            {"step": i, "epoch": 1 + i // 2, "t": float(i), "mu": mu * (i + 1)} for i in range(4)
        ]
        store.append_metrics(run_id, steps=steps)
        store.finish(run_id, RunStatus.FINISHED)
    report = build_report(store, plan_)
    # Fig. 3a's four panels fold into one on digits; 3b's three; 3c the budget view
    assert len(report["panels"]) == 5
    line = report["panels"][0]["lines"][0]
    assert (line["epochs"], line["mu"]) == ([1, 2], [pytest.approx(0.45), pytest.approx(1.05)])
    assert "CA-AT keeps μ lower in 4 of 5 panels." in report["verdict"]
    (group,) = report["budget_view"]
    lines = {ln["label"]: ln for ln in group["lines"]}
    assert set(lines) == {"Vanilla AT λ=0.5", "CA-AT γ=0.8"}  # λ=1, γ=0.9: one budget only
    vanilla = lines["Vanilla AT λ=0.5"]
    assert vanilla["eps"] == pytest.approx([0.15, 0.3, 0.45, 0.6])
    # the last epoch's steps 2 and 3 record 3ε and 4ε: their median is 3.5ε
    assert vanilla["last_mu"] == pytest.approx([3.5 * e for e in vanilla["eps"]])
    assert any("Vanilla AT λ=0.5: last-epoch μ rises with ε" in s for s in report["verdict"])
    assert any("CA-AT γ=0.8: last-epoch μ does not rise" in s for s in report["verdict"])
    names = {p.name for p in write_outputs(report, tmp_path, "fig3-smoke-e2")}
    expected = {"fig3a-smoke-e2.png", "fig3b-smoke-e2.png", "fig3c-smoke-e2.png"}
    assert expected | {"fig3-smoke-e2.csv"} <= names


# -- resuming ---------------------------------------------------------------------------------


def test_the_same_experiment_again_queues_nothing(store: Store) -> None:
    plan_ = resolve("fig6a", "smoke")
    new, held = queue(store, plan_)
    assert (len(new), len(held)) == (6, 0)
    assert queue(store, plan_) == ([], sorted(new))
    assert {r.sweep for r in store.sweep_runs("paper-fig6a-smoke")} == {"paper-fig6a-smoke"}


def _result(attack: str, eps: float, when: datetime, **extra: Any) -> SimpleNamespace:
    row = {"checkpoint": "best", "norm": "linf", "samples": 100, "created_at": when}
    row |= {"attack": attack, "eps": eps, "settings": settings_text(attack, eps)}
    return SimpleNamespace(**{**row, **extra})


def test_an_evaluation_stored_after_the_run_finished_is_not_measured_again() -> None:
    done = datetime(2025, 1, 1, tzinfo=UTC)
    run = SimpleNamespace(finished_at=done)
    spec = eval_spec(attacks="fgsm", budgets=[0.3], n=100)
    later = done + timedelta(seconds=1)
    stored = [_result("clean", 0.0, later), _result("fgsm", 0.3, later)]
    assert has_evaluation(run, spec, stored)
    assert not has_evaluation(run, spec, stored[:1])  # the attack is missing
    assert not has_evaluation(
        run, spec, [_result("clean", 0.0, later), _result("fgsm", 0.3, done - timedelta(seconds=1))]
    )
    assert not has_evaluation(run, spec, [*stored[:1], _result("fgsm", 0.3, later, samples=50)])


class _Bench:
    """A workbench whose evaluation 'workers' finish one poll after they start."""

    def __init__(self) -> None:
        self.jobs: dict[int, SimpleNamespace] = {}
        self.most = 0
        self.cancelled: list[int] = []
        self.store = self

    def reap(self) -> None:
        for job in self.jobs.values():
            if job.status == "running":
                job.polls += 1
                job.status = "finished" if job.polls > 1 else "running"

    def start_eval(self, run_id: int, spec: Any, *, env: dict[str, str]) -> int:
        job_id = len(self.jobs) + 1
        self.jobs[job_id] = SimpleNamespace(id=job_id, status="running", error=None, polls=0)
        self.most = max(self.most, sum(j.status == "running" for j in self.jobs.values()))
        return job_id

    def get_eval_job(self, job_id: int) -> SimpleNamespace:
        return self.jobs[job_id]

    def cancel_eval(self, job: SimpleNamespace) -> None:
        job.status = RunStatus.CANCELLED.value
        self.cancelled.append(job.id)


def test_evaluations_run_at_most_jobs_at_once_and_stop_when_asked() -> None:
    spec = eval_spec(attacks="fgsm", budgets=[0.3], device="cpu")
    todo = [(SimpleNamespace(id=i), spec) for i in range(5)]
    bench = _Bench()
    seen: list[int] = []
    done = run_evaluations(
        bench, todo, jobs=2, gpus=[], poll=0, on_progress=lambda p: seen.append(p.ended)
    )
    assert bench.most == 2 and done.counts == {"finished": 5} and seen[-1] == 5
    stopper = _Bench()
    stopped = run_evaluations(
        stopper, todo, jobs=2, gpus=[], poll=0, should_stop=lambda: bool(stopper.jobs)
    )
    assert len(stopper.jobs) == 2 and stopper.cancelled == [1, 2]
    assert isinstance(stopped, EvalProgress) and stopped.counts == {"cancelled": 2}


# -- bad input --------------------------------------------------------------------------------

BAD = [
    (["fig9"], "unknown experiment"),
    (["fig4"], "fig4 needs --weights"),
    (["fig5"], "fig5 needs --weights"),
    (["fig4", "--weights", "/nonexistent/swin.pth"], "no such file"),
    (["fig6a", "--weights", "/nonexistent/swin.pth"], "--weights"),
    (["fig6a", "--scale", "huge"], "--scale"),
    (["fig6a", "--seeds", "a,b"], "--seeds"),
    (["fig6a", "--device", "tpu"], "device"),
    (["fig6a", "--gpu", "A100:fast"], "--gpu"),
    (["fig6a", "--bench", "/nonexistent/bench.json"], "--bench"),
    (["fig6a", "--json", "--csv"], "--json"),
    (["fig6a", "--jobs", "0"], "--jobs"),
]


@pytest.mark.parametrize(("args", "mentions"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_exit_2_and_stores_nothing(
    args: list[str], mentions: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_cli("paper", *args, "--db", db)
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), captured.err
    assert mentions in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not Path(db).exists()


def test_a_bench_file_that_is_not_a_report_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    path.write_text("{}")
    with pytest.raises(CaatError, match="not a `caat bench --json` report"):
        est.read_bench(path)


def test_the_paper_package_and_its_command_do_not_import_torch() -> None:
    modules = ["caat_app.cli.paper"] + [
        f"caat_app.paper.{m}"
        for m in ("catalogue", "table1", "scale", "estimate", "run", "report", "cells", "plots")
    ]
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)\n"
    code += "print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code, *modules], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
    assert math.isclose(RATIO, 0.3 / (8 / 255))


def test_fig2_runs_the_synthetic_experiment_and_writes_its_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], db: str
) -> None:
    assert run_cli("paper", "fig2", "--dry-run", "--json", "--db", db) == 0
    plan_ = json.loads(capsys.readouterr().out)
    assert (plan_["runs"], plan_["estimate"]["total_gpu_hours"]) == ([], 0.0)
    out_dir = tmp_path / "out"
    assert run_cli("paper", "fig2", "--epochs", "1", "--out", str(out_dir), "--db", db) == 0
    text = capsys.readouterr().out
    assert "μ(δ) ≈" in text and "bound" in text
    names = {p.name for p in out_dir.iterdir()}
    assert names == {"fig2.png", "fig2.json", "fig2.csv", "fig2-verdict.txt"}
    report = json.loads((out_dir / "fig2.json").read_text())
    assert [r["delta"] for r in report["rows"]] == [0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    assert not Path(db).exists()  # nothing stored
