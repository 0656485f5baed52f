"""`caat paper EXP --slurm …`: the runs, then the evaluations, as Slurm job arrays waited for
in the foreground, on submitit's local executor (the same submission path as Slurm's);
and the options' bad combinations, each one line before anything is stored."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest
from helpers import run_cli
from rich.console import Console

from caat_app.config import build_config
from caat_app.evaluation.plan import eval_spec
from caat_app.paper.run import queue_evaluations
from caat_app.runs.manage import create_run
from caat_app.runs.slurm import JOB_FILE, eval_job_file
from caat_app.runs.sweep import plan_sweep
from caat_storage import Store

SMOKE = ["paper", "fig8", "--scale", "smoke", "--epochs", "1", "--seeds", "0"]


@pytest.mark.parametrize(
    ("extra", "mentions"),
    [
        (["--slurm", "partition"], "--slurm: expected key=value"),
        (["--slurm", "time=soon"], "--slurm: time='soon'"),
        (["--slurm", "time=10", "--jobs", "2"], "--jobs"),
    ],
)
def test_bad_slurm_options_are_one_line_and_store_nothing(
    extra: list[str], mentions: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "caat.db"
    code = run_cli(*SMOKE, "--db", str(db), *extra)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert mentions in lines[0]
    assert not db.exists()


def test_without_sbatch_nothing_is_queued_but_a_dry_run_still_plans(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("CAAT_SLURM_CLUSTER", raising=False)
    db = tmp_path / "caat.db"
    assert run_cli(*SMOKE, "--db", str(db), "--slurm", "time=10") == 2
    assert capsys.readouterr().err.strip().startswith("error: --slurm: sbatch is not on the PATH")
    assert not db.exists()

    assert run_cli(*SMOKE, "--db", str(db), "--slurm", "time=10", "--dry-run") == 0
    assert "dry run: nothing stored" in capsys.readouterr().out
    assert not db.exists()


@pytest.mark.slow
def test_an_experiment_trains_and_evaluates_as_local_job_arrays_then_resumes_without_jobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAAT_SLURM_CLUSTER", "local")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # four local tasks at once share 2 cores
    db, out = str(tmp_path / "caat.db"), tmp_path / "out"
    args = [*SMOKE, "--eval-n", "10", "--device", "cpu", "--db", db, "--out", str(out)]
    assert run_cli(*args, "--slurm", "time=10") == 0
    printed = capsys.readouterr().out
    assert "submitted 4 run(s) of sweep paper-fig8-smoke-e1 to Slurm" in printed
    assert "training: finished 4" in printed and "submitted 4 evaluation(s) to Slurm" in printed
    report = json.loads((out / "fig8-smoke-e1.json").read_text())
    assert report["missing"] == [] and len(report["runs"]) == 4
    with Store.open(f"sqlite:///{db}") as store:
        runs = store.sweep_runs("paper-fig8-smoke-e1")
        assert [r.status for r in runs] == ["finished"] * 4, [r.error for r in runs]
        submitted = Path(store.runs_root()) / "slurm"
        jobs = [job for r in runs if r.id is not None for job in store.eval_jobs(r.id)]
        assert [job.status for job in jobs] == ["finished"] * 4, [job.error for job in jobs]
        for job in jobs:
            run = store.get_run(job.run_id)
            assert run is not None and store.evals(job.run_id)
            for name in (JOB_FILE, eval_job_file(job.id or 0)):
                record = json.loads((Path(run.run_dir) / name).read_text())
                assert record["cluster"] == "local" and record["job_id"].isdigit(), name

    assert run_cli(*args, "--slurm", "time=10") == 0  # all there: nothing is submitted
    again = capsys.readouterr().out
    assert "submitted 0 run(s)" in again and "evaluations: 0 to measure" in again
    assert len(list(submitted.glob("*/*_submitted.pkl"))) == 8  # 4 runs, 4 evaluations


def test_a_held_run_is_not_resubmitted_and_one_whose_job_ended_unstarted_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from caat_app.cli import paper_slurm
    from caat_app.runs import slurm

    monkeypatch.setattr(paper_slurm, "POLL", 0.05)
    monkeypatch.setattr(paper_slurm, "CHECK_JOBS_EVERY", 0.1)
    pending = subprocess.Popen(["sleep", "2"])  # a job that is pending, then ends unstarted
    submitted: list[list[int]] = []

    def fake_submit(store: Store, run_ids: list[int], params: str) -> list[str]:
        """Records each run as a local job that has already ended, like a task that died."""
        submitted.append(list(run_ids))
        gone = subprocess.Popen(["true"])
        gone.wait()
        for run_id in run_ids:
            run = store.get_run(run_id)
            assert run is not None
            _record(run.run_dir, JOB_FILE, str(gone.pid))
        return [str(gone.pid)] * len(run_ids)

    monkeypatch.setattr(slurm, "submit", fake_submit)
    with Store.open(f"sqlite:///{tmp_path / 'caat.db'}") as store:
        configs = [build_config({"name": f"r{lam}", "lam": lam}) for lam in (0.0, 1.0)]
        held, fresh = plan_sweep(store, "s", configs)[0]
        run = store.get_run(held)
        assert run is not None
        _record(run.run_dir, JOB_FILE, str(pending.pid))
        shown = io.StringIO()
        counts, stopped = paper_slurm.train_on_slurm(
            store, "s", "time=10", Console(file=shown, width=200)
        )
        assert submitted == [[fresh]] and not stopped
        assert counts["failed"] == 2 and "1 wait for jobs submitted before" in shown.getvalue()
        for run_id in (held, fresh):
            run = store.get_run(run_id)
            assert run is not None and run.status == "failed"
            assert "Slurm job ended without starting it" in (run.error or "")
    pending.wait()


def _record(run_dir: str, name: str, job_id: str) -> None:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / name).write_text(json.dumps({"job_id": job_id, "cluster": "local"}))


def test_an_evaluation_already_queued_is_waited_for_not_queued_again(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'caat.db'}") as store:
        run_id = create_run(store, build_config({"name": "r"}))
        run = store.get_run(run_id)
        assert run is not None
        Path(run.run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run.run_dir) / "best.pt").write_bytes(b"weights")
        pgd, fgsm = (eval_spec(attacks=a, budgets="0.3", n=10) for a in ("pgd", "fgsm"))
        first, errors = queue_evaluations(store, [(run, pgd)])
        again, _ = queue_evaluations(store, [(run, pgd), (run, fgsm)])
        assert errors == [] and again[0] == first[0] and again[1] not in first
        assert sorted(job.id for job in store.eval_jobs(run_id)) == sorted(again)
        (Path(run.run_dir) / "best.pt").unlink()
        _, errors = queue_evaluations(store, [(run, eval_spec(attacks="pgd", budgets="0.6"))])
        assert len(errors) == 1 and "no best checkpoint" in errors[0]
