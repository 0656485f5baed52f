"""The `caat` command line, as a person and a script use it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import run_cli

from caat_storage import RunStatus, Store


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "store" / "caat.db")


def _run_count(db: str) -> int:
    with Store.open(f"sqlite:///{db}") as store:
        return len(store.list_runs())


BAD_INPUT = [
    (["--gamma", "1.5"], "gamma"),
    (["--gamma", "-1"], "gamma"),
    (["--lam", "-0.5"], "lam"),
    (["--lam", "2"], "lam"),
    (["--eps", "-0.1"], "eps"),
    (["--eps", "8/zero"], "eps"),
    (["--epochs", "0"], "epochs"),
    (["--epochs", "many"], "--epochs"),
    (["--model", "vgg"], "model"),
    (["--dataset", "imagenet"], "dataset"),
    (["--loss", "hinge"], "loss"),
    (["--attack", "cw"], "attack"),
    (["--projection", "diagonal"], "projection"),
    (["--preset", "paper-mnist"], "preset"),
    (["--config", "/nonexistent/run.toml"], "config file"),
    (["--no-such-option"], "no-such-option"),
]


@pytest.mark.parametrize(("args", "mentions"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    args: list[str], mentions: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_cli("train", "--db", db, *args)
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), captured.err
    assert mentions in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not Path(db).exists()  # nothing written: the store was never even opened


def test_unknown_choice_lists_them(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("train", "--db", db, "--dataset", "imagenet") == 2
    err = capsys.readouterr().err
    assert (
        "'cifar100', 'cub200', 'dogs', 'imagefolder', 'synthetic-cifar' or 'synthetic-cifar-tiny'"
        in err
    )


def test_invalid_toml_and_unwritable_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3\n")
    assert run_cli("train", "--config", str(bad), "--db", str(tmp_path / "x.db")) == 2
    assert "not valid TOML" in capsys.readouterr().err
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert run_cli("train", "--epochs", "1", "--db", str(blocker / "caat.db")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "store" in err and "Traceback" not in err


def test_missing_dataset_offline_is_one_line(
    tmp_path: Path, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    code = run_cli(
        "train", "--db", db, "--dataset", "cifar10", "--data-dir", str(data), "--no-download"
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert str(data / "cifar10") in err and "cifar-10-python.tar.gz" in err
    assert not Path(db).exists()


@pytest.fixture
def trained(db: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert (
        run_cli(
            "train",
            "--db",
            db,
            "--epochs",
            "1",
            "--model",
            "linear",
            "--name",
            "[red]not markup[/red]",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "run 1 ([red]not markup[/red])" in out  # the id at start, the name as text
    return db


def test_train_then_runs_show_export(
    trained: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("runs", "--db", trained, "--json") == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in runs] == ["finished"]
    assert runs[0]["config"]["model"] == "linear" and runs[0]["epochs_done"] == 1

    assert run_cli("show", "[red]not markup[/red]", "--db", trained, "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == 1 and shown["best_val_clean"] is not None

    assert run_cli("runs", "--db", trained) == 0
    assert "[red]not markup[/red]" in capsys.readouterr().out

    assert run_cli("export", "1", "--db", trained, "--format", "json") == 0
    exported = json.loads(capsys.readouterr().out)
    assert len(exported["steps"]) == shown["steps_done"] and len(exported["epochs"]) == 1
    assert {"phi", "mu", "coef_c", "projected", "lr"} <= set(exported["steps"][0])

    out_file = tmp_path / "epochs.csv"
    assert (
        run_cli(
            "export",
            "1",
            "--db",
            trained,
            "--format",
            "csv",
            "--series",
            "epochs",
            "-o",
            str(out_file),
        )
        == 0
    )
    header, row = out_file.read_text().splitlines()
    assert header.startswith("run_id,epoch,") and row.startswith("1,1,")

    assert run_cli("export", "1", "--db", trained, "--format", "xml") == 2
    assert run_cli("show", "404", "--db", trained) == 2
    assert "no run '404'" in capsys.readouterr().err


def test_inspecting_commands_never_import_torch(trained: str) -> None:
    code = (
        "import sys\n"
        "from caat_app.cli import main\n"
        "for args in (['runs'], ['show', '1'], ['export', '1'], ['runs', '--json']):\n"
        "    try:\n"
        "        main([*args, '--db', sys.argv[1]])\n"
        "    except SystemExit as exc:\n"
        "        assert not exc.code, exc.code\n"
        "print('torch' in sys.modules, file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, trained], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "False"


def _wait_for(db: str, run_id: int, predicate, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    with Store.open(f"sqlite:///{db}") as store:
        while time.monotonic() < deadline:
            run = store.get_run(run_id)
            if run is not None and predicate(run):
                return run
            time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not get there in {timeout}s: {run}")


@pytest.mark.slow
def test_detached_worker_runs_to_finished(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    start = time.monotonic()
    assert run_cli("train", "--db", db, "--epochs", "2", "--detach") == 0
    assert time.monotonic() - start < 10  # returns at once, the worker trains
    assert "started in worker pid" in capsys.readouterr().out
    run = _wait_for(db, 1, lambda r: r.status in {"finished", "failed"})
    assert run.status == "finished", run.error
    assert run.epochs_done == 2 and run.heartbeat_at is not None and run.pid != os.getpid()
    with Store.open(f"sqlite:///{db}") as store:
        assert len(store.steps(1)) == run.steps_done and len(store.epochs(1)) == 2
    log = (Path(run.run_dir) / "worker.log").read_text()
    assert "epoch 2:" in log and "run 1 finished" in log


@pytest.mark.slow
def test_sigterm_cancels_cleanly(db: str) -> None:
    assert run_cli("train", "--db", db, "--epochs", "200", "--detach") == 0
    run = _wait_for(db, 1, lambda r: r.status == "running" and r.steps_done > 0)
    assert run_cli("cancel", "1", "--db", db) == 0
    run = _wait_for(db, 1, lambda r: r.status != "running", timeout=30)
    assert run.status == "cancelled"
    assert (Path(run.run_dir) / "last.pt").exists()
    assert run.finished_at is not None
    for _ in range(100):  # the worker (our child here) exits, and exits cleanly
        pid, status = os.waitpid(run.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.1)
    assert pid == run.pid and os.waitstatus_to_exitcode(status) == 0
    assert run_cli("cancel", "1", "--db", db) == 2  # no longer running


def test_failed_run_keeps_its_traceback(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import caat_app.training.trainer
    from caat_app.config import build_config
    from caat_app.runs.worker import StopFlag, execute_run

    def boom(*args, **kwargs):
        raise RuntimeError("the GPU caught fire")

    monkeypatch.setattr(caat_app.training.trainer, "train", boom)
    cfg = build_config({"epochs": 1})
    with Store.open(f"sqlite:///{db}") as store:
        run_id = store.create_run(
            name="x",
            config=cfg.model_dump(mode="json"),
            method="caat",
            param=0.8,
            dataset="digits",
            model="cnn",
            eps=0.3,
            epochs_total=1,
        )
        with pytest.raises(RuntimeError):
            execute_run(store, run_id, StopFlag())
        run = store.get_run(run_id)
    assert run.status == "failed"
    assert "Traceback" in run.error and "the GPU caught fire" in run.error


@pytest.mark.slow
def test_demo_trains_both_methods_side_by_side(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("demo", "--epochs", "1", "--db", db) == 0
    out = capsys.readouterr().out
    assert "results" in out and "vanilla λ=0.5" in out and "caat γ=0.8" in out
    assert "caat show 1" in out and "dashboard" in out
    with Store.open(f"sqlite:///{db}") as store:
        runs = store.list_runs()
    assert sorted(r.method for r in runs) == ["caat", "vanilla"]
    assert {r.status for r in runs} == {"finished"}
    assert [r.eps for r in runs] == [pytest.approx(0.3)] * 2


@pytest.mark.slow
def test_bench_json_reports_the_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--steps", "5", "--repeats", "1", "--attack-steps", "2")
    args += ("--only", "training,evaluation")  # the other sections have tests of their own
    assert run_cli("bench", "--json", *args, "--eval-n", "20", "--eval-epochs", "2") == 0
    report = json.loads(capsys.readouterr().out)
    ev = report["evaluation"]
    assert ev["images"] == 20 and set(ev["attacks"]) == {"pgd", "autoattack-fast"}
    for a in ev["attacks"].values():
        assert a["images_per_sec"] == pytest.approx(20 / a["seconds"])
        assert 0 <= a["accuracy"] <= ev["clean"]
    ms = report["ms_per_step"]
    assert report["ratio_caat_vs_vanilla"] == pytest.approx(ms["caat"] / ms["vanilla"])
    assert ms["vanilla"] > ms["clean"] > 0  # an attacked step costs more than a clean one
    assert 0 < report["logging_overhead"] < 1


def test_sigint_handler_restored_after_foreground_training(trained: str) -> None:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_rename_tag_note_delete(trained: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("rename", "1", "better name", "--db", trained) == 0
    assert run_cli("tag", "better name", "baseline", "digits ", "baseline", "--db", trained) == 0
    assert run_cli("note", "1", "λ sweep\nsecond line", "--db", trained) == 0
    assert run_cli("show", "1", "--json", "--db", trained) == 0
    shown = json.loads(capsys.readouterr().out.split("\n", 3)[-1])
    assert (shown["name"], shown["tags"]) == ("better name", "baseline,digits")
    assert shown["notes"] == "λ sweep\nsecond line"
    assert run_cli("rename", "1", "   ", "--db", trained) == 2
    assert run_cli("tag", "1", "a,b", "--db", trained) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "Traceback" not in err
    run_dir = Path(shown["run_dir"])
    assert run_dir.is_dir()
    assert run_cli("delete", "1", "--yes", "--db", trained) == 0
    assert not run_dir.exists()
    assert run_cli("show", "1", "--db", trained) == 2


def test_setup_keeps_the_heartbeat(db: str) -> None:
    from caat_app.runs.worker import _with_heartbeat

    with Store.open(f"sqlite:///{db}") as store:
        run_id = store.create_run(
            name="x",
            config={},
            method="caat",
            param=0.8,
            dataset="digits",
            model="cnn",
            eps=0.3,
            epochs_total=1,
        )
        store.mark_running(run_id, os.getpid())
        before = store.get_run(run_id).heartbeat_at
        assert (
            _with_heartbeat(
                lambda: store.heartbeat(run_id), lambda: time.sleep(0.35) or 42, every=0.1
            )
            == 42
        )
        assert store.get_run(run_id).heartbeat_at > before
        with pytest.raises(KeyError):
            _with_heartbeat(lambda: store.heartbeat(run_id), lambda: {}["missing"], every=0.1)


def test_compare_shows_differences(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    for lam in ("0.25", "0.75"):
        assert (
            run_cli(
                "train",
                "--db",
                db,
                "--epochs",
                "1",
                "--model",
                "linear",
                "--method",
                "vanilla",
                "--lam",
                lam,
                "--attack-steps",
                "2",
            )
            == 0
        )
    capsys.readouterr()
    assert run_cli("compare", "1", "2", "--db", db, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    differs = {row["option"] for row in data["config"] if row["differs"]}
    assert differs == {"lam"}
    lam_row = next(row for row in data["config"] if row["option"] == "lam")
    assert lam_row["values"] == [0.25, 0.75]
    metric = next(row for row in data["metrics"] if row["key"] == "best_test_adv")
    assert all(0 <= v <= 1 for v in metric["values"])
    assert run_cli("compare", "1", "2", "--db", db) == 0
    out = capsys.readouterr().out
    assert "options are equal in every run" in out and "lam" in out
    assert run_cli("compare", "1", "--db", db) == 2


def _finished(store: Store, *, method: str, param: float, seed: int, sa: float, aa: float) -> int:
    from caat_app.config import build_config
    from caat_app.runs.manage import create_run

    key = "gamma" if method == "caat" else "lam"
    cfg = build_config({"method": method, key: param, "seed": seed, "eps": "8/255"})
    run_id = create_run(store, cfg)
    store.finish(
        run_id,
        RunStatus.FINISHED,
        fields={
            "best_test_clean": sa,
            "best_test_adv": aa,
            "best_val_clean": sa,
            "best_val_adv": aa,
        },
    )
    return run_id


def test_front_json_csv_and_plot(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store.open(f"sqlite:///{db}") as store:
        for seed, jitter in ((0, 0.0), (1, 0.01)):
            _finished(store, method="vanilla", param=0.0, seed=seed, sa=0.98 + jitter, aa=0.1)
            _finished(store, method="vanilla", param=1.0, seed=seed, sa=0.80, aa=0.40 + jitter)
            _finished(store, method="caat", param=0.8, seed=seed, sa=0.95, aa=0.35 + jitter)
    assert run_cli("front", "--db", db, "--json") == 0
    rep = json.loads(capsys.readouterr().out)
    labels = {(p["family"], p["label"]): p for p in rep["points"]}
    assert set(labels) == {("Vanilla AT", "λ=0"), ("Vanilla AT", "λ=1"), ("CA-AT", "γ=0.8")}
    assert labels[("CA-AT", "γ=0.8")]["seeds"] == 2
    assert labels[("CA-AT", "γ=0.8")]["aa"] == pytest.approx(0.355)
    assert "ε = 8/255" in rep["axes"]["aa"] and "PGD-10" in rep["axes"]["aa"]
    assert set(rep["families"]) == {"Vanilla AT", "CA-AT"}
    assert rep["verdict"]
    png, csv_file = tmp_path / "front.png", tmp_path / "front.csv"
    assert run_cli("front", "--db", db, "--plot", str(png), "--csv", str(csv_file)) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert csv_file.read_text().splitlines()[0].startswith("family,label,sa,aa")
    out = capsys.readouterr().out
    assert "hypervolume" in out
    assert run_cli("front", "--db", db, "--ref", "2,0") == 2
    assert run_cli("front", "--db", db, "--plot", str(tmp_path / "f.gif")) == 2
    assert run_cli("front", "--db", db, "--split", "train") == 2


def test_caat_alone_opens_the_dashboard_without_the_command_parser() -> None:
    from caat_app.cli import dashboard_options

    defaults = {"db": None, "per_gpu": 1, "max_cpu": 1, "artifacts": None}
    assert dashboard_options([]) == defaults
    assert dashboard_options(["--artifacts", "/shared"]) == {**defaults, "artifacts": "/shared"}
    assert dashboard_options(["--db", "x.db", "--per-gpu=2"]) == {
        **defaults,
        "db": "x.db",
        "per_gpu": 2,
    }
    assert dashboard_options(["--db=sqlite:///a=b.db"]) == {**defaults, "db": "sqlite:///a=b.db"}
    # A command, help, a bad or missing value: the full parser takes it and says what is wrong.
    for args in (["runs"], ["--help"], ["--per-gpu", "0"], ["--max-cpu", "x"], ["--db"]):
        assert dashboard_options(args) is None


def test_a_bad_dashboard_option_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("--per-gpu", "0") == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
