"""Sweeps: the grid, resuming one, the loop that works through it, and `caat sweep`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli

from caat_app.config import ConfigError, RunConfig, build_config
from caat_app.runs.grid import config_key, expand, name_runs, parse_list, sweep_options
from caat_app.runs.sweep import (
    current_runs,
    plan_sweep,
    run_sweep,
    status_counts,
    sweep_configs,
    sweep_rows,
)
from caat_storage import RunStatus, Store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'caat.db'}") as opened:
        yield opened


def _grid(method: str, param: str, values: list[float], seeds: list[int]) -> list[RunConfig]:
    base = {"method": method, "epochs": 1, "model": "linear", "device": "cpu"}
    return name_runs("s", expand(base, {param: values}, seeds))


# -- parse_list -----------------------------------------------------------------------------


def test_parse_list_reads_each_kind() -> None:
    assert parse_list("0,0.25, 0.5", "float") == [0.0, 0.25, 0.5]
    assert parse_list("0.5", "float") == [0.5]  # a single value is a list of one
    assert parse_list("8/255,16/255,0.1", "budget") == [8 / 255, 16 / 255, 0.1]
    assert parse_list("0,1,2", "int") == [0, 1, 2]
    assert parse_list("ce,trades", "str") == ["ce", "trades"]


@pytest.mark.parametrize(
    ("text", "kind", "mentions"),
    [
        ("0,,1", "float", "empty item"),
        ("0,1,", "float", "empty item"),
        ("", "float", "empty item"),
        ("0,x", "float", "'x'"),
        ("inf", "float", "finite"),
        ("nan", "float", "finite"),
        ("1.5", "int", "whole numbers"),
        ("a", "int", "whole numbers"),
        ("8/zero", "budget", "8/255"),
        ("8/0", "budget", "8/255"),
    ],
)
def test_parse_list_refuses_garbage_in_one_line(text: str, kind: Any, mentions: str) -> None:
    with pytest.raises(ConfigError, match=r"^lam: ") as info:
        parse_list(text, kind, option="lam")
    assert mentions in str(info.value) and "\n" not in str(info.value)


def test_sweep_options_split_base_lists_and_seeds() -> None:
    options = {"method": "vanilla", "lam": "0,0.5", "epochs": "2", "eps": "8/255", "seed": None}
    base, lists, seeds = sweep_options(options, {}, "0,1")
    assert base == {"method": "vanilla", "epochs": 2, "eps": 8 / 255}
    assert lists == {"lam": [0.0, 0.5]} and seeds == [0, 1]
    # --seed as a list is the same axis as --seeds
    assert sweep_options({"seed": "3,4"}, {}, None) == ({}, {}, [3, 4])
    assert sweep_options({"seed": "3"}, {}, None) == ({"seed": 3}, {}, [])
    with pytest.raises(ConfigError, match="not both"):
        sweep_options({"seed": "0"}, {}, "0,1")
    # a config file's lists are swept too; the command line wins over the file
    base, lists, seeds = sweep_options(
        {"lam": None, "gamma": "0.9"}, {"lam": [0, 1], "gamma": [0.7, 0.8], "seeds": [5]}, None
    )
    assert (base, lists, seeds) == ({"gamma": 0.9}, {"lam": [0, 1]}, [5])
    # --seed on the command line wins over a file's seeds
    assert sweep_options({"seed": "2"}, {"seeds": [0, 1]}, None) == ({"seed": 2}, {}, [])
    with pytest.raises(ConfigError, match="device: cannot be swept"):
        sweep_options({}, {"device": ["cpu", "cuda"]}, None)


# -- expand ---------------------------------------------------------------------------------


def test_expand_is_the_product_times_the_seeds() -> None:
    configs = expand(
        {"method": "vanilla", "epochs": 3}, {"lam": [0, 0.5], "eps": [0.1, 0.2, 0.3]}, [0, 1]
    )
    assert len(configs) == 2 * 3 * 2
    assert [(c.lam, c.eps, c.seed) for c in configs[:3]] == [(0, 0.1, 0), (0, 0.1, 1), (0, 0.2, 0)]
    assert {(c.lam, c.eps, c.seed) for c in configs} == {
        (lam, eps, seed) for lam in (0, 0.5) for eps in (0.1, 0.2, 0.3) for seed in (0, 1)
    }
    assert all(c.method == "vanilla" and c.epochs == 3 for c in configs)


def test_expand_without_lists_or_seeds_is_the_base() -> None:
    assert expand({"gamma": 0.9, "seed": 7}, {}, []) == [build_config({"gamma": 0.9, "seed": 7})]
    # no seeds: the base's seed; repeated values come out once
    assert [c.gamma for c in expand({}, {"gamma": [0.8, 0.8, 0.9]}, [])] == [0.8, 0.9]


def test_expand_budgets_go_through_build_config() -> None:
    configs = expand({"dataset": "cifar10"}, {"eps": [8 / 255, 16 / 255]}, [])
    assert [c.eps for c in configs] == [8 / 255, 16 / 255]
    assert all(c.alpha == 2 / 255 for c in configs)  # the data set's default still applies


@pytest.mark.parametrize(
    ("base", "lists", "seeds", "mentions"),
    [
        ({"method": "vanilla"}, {"lam": [0, 2]}, [], "lam: "),
        ({"method": "vanilla"}, {"lam": [0, 2]}, [], "combination lam=2"),
        ({}, {"gamma": [0.8]}, [0, -1], "seed=-1"),
        ({"model": "vgg"}, {}, [], "model: "),
        ({}, {"lam": [0, 1]}, [], "add --method vanilla"),  # λ does nothing under CA-AT
        ({"method": "vanilla"}, {"gamma": [0.7, 0.9]}, [], "add --method caat"),
        ({}, {"lam": []}, [], "empty list"),
        ({}, {"seed": [0, 1]}, [2], "not both"),
    ],
)
def test_expand_refuses_a_bad_combination_in_one_line(
    base: dict[str, Any], lists: dict[str, list[Any]], seeds: list[int], mentions: str
) -> None:
    with pytest.raises(ConfigError) as info:
        expand(base, lists, seeds)
    assert mentions in str(info.value) and "\n" not in str(info.value)


def test_name_runs() -> None:
    names = [c.name for c in _grid("vanilla", "lam", [0, 0.25], [0, 1])]
    assert names == [f"s-vanilla-lam{lam}-s{seed}" for lam in ("0", "0.25") for seed in (0, 1)]
    caat = name_runs("s", expand({"method": "caat"}, {"gamma": [0.8], "eps": [0.1, 0.2]}, []))
    assert [c.name for c in caat] == ["s-caat-gamma0.8-eps0.1-s0", "s-caat-gamma0.8-eps0.2-s0"]
    with pytest.raises(ConfigError, match="--name: a sweep name cannot be empty"):
        name_runs("  ", caat)


def test_config_key_ignores_the_name_only() -> None:
    a, b = build_config({"name": "a", "gamma": 0.8}), build_config({"name": "b", "gamma": 0.8})
    assert config_key(a) == config_key(b) == config_key(a.model_dump(mode="json"))
    assert config_key(a) != config_key(build_config({"gamma": 0.8, "seed": 1}))


# -- the store ------------------------------------------------------------------------------


def test_sweep_column_search_sort_and_listing(store: Store) -> None:
    from caat_app.runs.manage import create_run

    lone = create_run(store, build_config({}))
    first = plan_sweep(store, "alpha", _grid("vanilla", "lam", [0, 1], [0]))[0]
    second = plan_sweep(store, "beta grid", _grid("caat", "gamma", [0.8], [0, 1, 2]))[0]
    assert store.get_run(lone).sweep is None  # type: ignore[union-attr]
    assert [r.id for r in store.sweep_runs("alpha")] == first
    assert [r.id for r in store.sweep_runs(" beta grid ")] == second  # oldest first
    assert {r.id for r in store.list_runs(search="beta")} == set(second)  # the dashboard filter
    assert [r.id for r in store.list_runs(sort="sweep", descending=False)][-1] == lone
    store.finish(second[0], RunStatus.FINISHED)
    store.finish(second[1], RunStatus.FAILED)
    assert store.list_sweeps() == [
        ("beta grid", {"finished": 1, "failed": 1, "queued": 1}),
        ("alpha", {"queued": 2}),
    ]
    with pytest.raises(ValueError, match="sweep name"):
        create_run(store, build_config({}), sweep="a\nb")


# -- plan_sweep: resuming -------------------------------------------------------------------


def test_replanning_a_half_finished_sweep_queues_only_what_is_missing(store: Store) -> None:
    grid = _grid("vanilla", "lam", [0, 0.5, 1], [0, 1])
    new, held = plan_sweep(store, "s", grid)
    assert len(new) == 6 and held == []
    for run_id in new[:3]:
        store.finish(run_id, RunStatus.FINISHED, fields={"best_test_clean": 0.9})
    store.update_run(new[3], status="running", pid=os.getpid())
    store.finish(new[4], RunStatus.FAILED, error="boom")
    store.finish(new[5], RunStatus.CANCELLED)

    again, held = plan_sweep(store, "s", grid)
    assert held == new[:4]  # finished ones and the one in flight
    assert len(again) == 2  # the failed and the cancelled config, as new runs
    runs = {r.id: r for r in store.sweep_runs("s")}
    assert [json.loads(runs[i].config)["lam"] for i in again] == [1.0, 1.0]
    assert [runs[i].name for i in again] == ["s-vanilla-lam1-s0", "s-vanilla-lam1-s1"]
    assert runs[new[4]].status == "failed"  # the old attempt stays as history
    # the grid counts each config once, by its newest attempt
    assert [r.id for r in current_runs(runs.values())] == [*new[:4], *again]
    assert status_counts(runs.values())["failed"] == 0
    assert sweep_configs(store, "s") == grid

    assert plan_sweep(store, "s", grid) == ([], [*new[:4], *again])  # nothing new twice


def test_the_same_grid_twice_creates_nothing_the_second_time(store: Store) -> None:
    grid = _grid("caat", "gamma", [0.8, 0.9], [0])
    new, _ = plan_sweep(store, "s", grid)
    assert plan_sweep(store, "s", grid) == ([], new)
    # renamed runs are the same runs: only the config counts
    renamed = [c.model_copy(update={"name": f"other-{i}"}) for i, c in enumerate(grid)]
    assert plan_sweep(store, "s", renamed) == ([], new)
    # the same grid under another sweep name is another sweep
    assert len(plan_sweep(store, "t", grid)[0]) == 2
    assert len(store.list_runs()) == 4


def test_two_method_halves_share_one_sweep(store: Store) -> None:
    vanilla, _ = plan_sweep(store, "s", _grid("vanilla", "lam", [0, 0.5, 1], [0, 1]))
    caat, held = plan_sweep(store, "s", _grid("caat", "gamma", [0.8, 0.9], [0, 1]))
    assert held == [] and len(caat) == 4
    runs = store.sweep_runs("s")
    assert [r.id for r in runs] == vanilla + caat
    assert {(r.method, r.param) for r in runs} == {
        *(("vanilla", lam) for lam in (0, 0.5, 1)),
        *(("caat", g) for g in (0.8, 0.9)),
    }
    assert store.list_sweeps() == [("s", {"queued": 10})]
    labels = [row.label for row in sweep_rows(runs)]
    assert labels[0] == "vanilla λ=0" and labels[-1] == "caat γ=0.9"


# -- run_sweep ------------------------------------------------------------------------------


@dataclass
class FakeProc:
    pid: int

    def poll(self) -> int | None:
        return None


@dataclass
class InstantWorker:
    """A launch that starts nothing: it marks the run running under this (live) pid."""

    store: Store
    launched: list[int] = field(default_factory=list)

    def __call__(
        self, db_url: str, run_id: int, run_dir: Path, *, env: dict[str, str] | None = None
    ) -> FakeProc:
        self.launched.append(run_id)
        self.store.mark_running(run_id, os.getpid())
        return FakeProc(os.getpid())


def test_run_sweep_never_runs_more_than_jobs(store: Store) -> None:
    new, _ = plan_sweep(store, "s", _grid("vanilla", "lam", [0, 0.25, 0.5, 0.75, 1], [0]))
    other = plan_sweep(store, "other", _grid("caat", "gamma", [0.8], [0]))[0]
    launch = InstantWorker(store)
    seen: list[dict[str, int]] = []

    def progress(counts: dict[str, int]) -> None:
        seen.append(dict(counts))
        running = [r for r in store.sweep_runs("s") if r.status == "running"]
        assert len(running) <= 2
        if running:  # one worker ends per poll, with a result
            store.finish(running[0].id, RunStatus.FINISHED, fields={"best_test_adv": 0.5})  # type: ignore[arg-type]

    counts = run_sweep(store, "s", jobs=2, gpus=[], poll=0, on_progress=progress, launch=launch)
    assert counts["finished"] == 5 and counts["queued"] == counts["running"] == 0
    assert sorted(launch.launched) == new  # oldest first, and only this sweep's runs
    assert max(c["running"] for c in seen) == 2
    assert store.get_run(other[0]).status == "queued"  # type: ignore[union-attr]
    assert {r.best_test_adv for r in store.sweep_runs("s")} == {0.5}


def test_jobs_caps_the_sweep_across_gpus(store: Store) -> None:
    """`--jobs 2` on two GPUs is two runs in all, one on each, not two per GPU."""
    from caat_app.runs.launcher import Gpu

    grid = expand({"method": "caat", "device": "auto"}, {"gamma": [0.6, 0.7, 0.8, 0.9]}, [])
    plan_sweep(store, "s", name_runs("s", grid))
    launch = InstantWorker(store)
    placed: list[list[int | None]] = []

    def progress(counts: dict[str, int]) -> None:
        running = [r for r in store.sweep_runs("s") if r.status == "running"]
        placed.append(sorted(r.gpu for r in running))  # type: ignore[type-var]
        for run in running:
            store.finish(run.id, RunStatus.FINISHED)  # type: ignore[arg-type]

    gpus = [Gpu(0, "a", 1), Gpu(1, "b", 1)]
    counts = run_sweep(store, "s", jobs=2, gpus=gpus, poll=0, on_progress=progress, launch=launch)
    assert counts["finished"] == 4
    assert placed[:2] == [[0, 1], [0, 1]]


def test_run_sweep_with_nothing_queued_returns_at_once(store: Store) -> None:
    new, _ = plan_sweep(store, "s", _grid("caat", "gamma", [0.8, 0.9], [0]))
    for run_id in new:
        store.finish(run_id, RunStatus.FINISHED)
    launch = InstantWorker(store)
    counts = run_sweep(store, "s", jobs=4, gpus=[], poll=10, launch=launch)
    assert counts["finished"] == 2 and launch.launched == []


def test_a_worker_that_dies_is_recorded_failed(store: Store) -> None:
    plan_sweep(store, "s", _grid("caat", "gamma", [0.8], [0]))

    def launch(db_url: str, run_id: int, run_dir: Path, *, env: Any = None) -> Any:
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        proc.wait()  # gone before it ever reported
        return proc

    counts = run_sweep(store, "s", jobs=1, gpus=[], poll=0.05, launch=launch)
    assert counts["failed"] == 1
    assert "worker died" in (store.sweep_runs("s")[0].error or "")


# A stand-in worker: no torch, but it ends its run `cancelled` on SIGTERM as the real one does.
_FAKE_WORKER = """
import os, signal, sys, time
from caat_storage import RunStatus, Store
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
with Store.open(sys.argv[1]) as store:
    store.mark_running(int(sys.argv[2]), os.getpid())
    while not stop:
        time.sleep(0.02)
    store.finish(int(sys.argv[2]), RunStatus.CANCELLED)
"""


def test_stopping_a_sweep_cancels_running_and_queued_runs(store: Store) -> None:
    new, _ = plan_sweep(store, "s", _grid("vanilla", "lam", [0, 0.5, 1], [0]))
    procs: list[subprocess.Popen[bytes]] = []

    def launch(db_url: str, run_id: int, run_dir: Path, *, env: Any = None) -> Any:
        procs.append(subprocess.Popen([sys.executable, "-c", _FAKE_WORKER, db_url, str(run_id)]))
        return procs[-1]

    def should_stop() -> bool:  # once both workers run (their handler is in place)
        runs = store.sweep_runs("s")
        return sum(r.status == "running" and r.started_at is not None for r in runs) == 2

    try:
        counts = run_sweep(
            store, "s", jobs=2, gpus=[], poll=0.05, launch=launch, should_stop=should_stop
        )
    finally:
        for proc in procs:  # recorded cancelled: each is exiting by itself
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert counts["cancelled"] == 3 and counts["running"] == counts["queued"] == 0
    assert [r.status for r in store.sweep_runs("s")] == ["cancelled"] * 3
    assert [p.returncode for p in procs] == [0, 0]  # each worker ended itself, cleanly
    assert len(procs) == 2 and new[2] not in [int(p.args[-1]) for p in procs]  # type: ignore[index]


# -- caat sweep -----------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "store" / "caat.db")


BAD_INPUT = [
    (["--method", "vanilla", "--lam", "0,2"], "lam"),
    (["--method", "vanilla", "--lam", "0,,1"], "empty item"),
    (["--lam", "0,1"], "--method vanilla"),
    (["--eps", "8/255,x"], "eps"),
    (["--seeds", "0,a"], "seeds"),
    (["--seed", "0", "--seeds", "0,1"], "not both"),
    (["--epochs", "0,1"], "epochs"),
    (["--model", "linear,vgg"], "model"),
]


@pytest.mark.parametrize(("args", "mentions"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_sweep_input_is_one_line_exit_2_and_writes_nothing(
    args: list[str], mentions: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_cli("sweep", "--name", "t", "--db", db, *args)
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), captured.err
    assert mentions in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not Path(db).exists()


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["--name", "  "], "sweep name cannot be empty"),
        ([], "--name"),
        (["--name", "t", "--resume"], "no sweep 't'"),
        (["--name", "t", "--resume", "--lam", "0"], "drop --lam"),
    ],
)
def test_bad_sweep_name_or_resume(
    args: list[str], mentions: str, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("sweep", "--db", db, *args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and mentions in err
    assert not Path(db).exists()


def test_detach_only_queues_and_adds_to_the_sweep(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["sweep", "--name", "t", "--db", db, "--detach", "--epochs", "1", "--seeds", "0,1"]
    assert run_cli(*base, "--method", "vanilla", "--lam", "0,0.5") == 0
    out = capsys.readouterr().out
    assert "4 queued now, 0 already" in out and "t-vanilla-lam0.5-s1" in out
    assert "caat sweep --name t --resume --db" in out
    assert run_cli(*base, "--method", "caat", "--gamma", "0.9") == 0  # the other half
    assert run_cli(*base, "--method", "vanilla", "--lam", "0,0.5,1") == 0  # one more λ
    assert "2 queued now, 4 already" in capsys.readouterr().out
    with Store.open(f"sqlite:///{db}") as store:
        runs = store.sweep_runs("t")
        assert len(runs) == 8 and {r.status for r in runs} == {"queued"}
        assert store.list_sweeps() == [("t", {"queued": 8})]


def test_a_config_file_can_hold_the_lists(
    tmp_path: Path, db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text('method = "caat"\ngamma = [0.8, 0.9]\nseeds = [0, 1]\nepochs = 1\n')
    args = ["sweep", "--name", "f", "--config", str(grid), "--db", db, "--detach"]
    assert run_cli(*args) == 0
    assert "4 queued now" in capsys.readouterr().out
    assert run_cli(*args, "--gamma", "0.9", "--seeds", "0") == 0  # the command line wins
    assert "0 queued now, 1 already" in capsys.readouterr().out


@pytest.mark.slow
def test_a_real_sweep_end_to_end_then_again_then_resumed(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["sweep", "--name", "t", "--method", "vanilla", "--lam", "0,1", "--epochs", "1"]
    args += ["--model", "linear", "--jobs", "2", "--db", db]
    assert run_cli(*args) == 0
    out = capsys.readouterr().out
    assert "2 queued now" in out and "caat front --sweep t" in out
    assert "vanilla λ=0" in out and "vanilla λ=1" in out
    with Store.open(f"sqlite:///{db}") as store:
        runs = store.sweep_runs("t")
        assert [r.status for r in runs] == ["finished", "finished"], [r.error for r in runs]
        assert all(r.best_test_clean is not None and r.pid != os.getpid() for r in runs)

    start = time.monotonic()
    assert run_cli(*args) == 0  # the same sweep again: nothing to train
    assert time.monotonic() - start < 15
    assert "0 queued now, 2 already" in capsys.readouterr().out

    with Store.open(f"sqlite:///{db}") as store:
        store.finish(runs[0].id, RunStatus.FAILED, error="lost")  # type: ignore[arg-type]
    assert run_cli("sweep", "--name", "t", "--resume", "--db", db) == 0
    assert "1 queued now, 1 already" in capsys.readouterr().out
    with Store.open(f"sqlite:///{db}") as store:
        runs = store.sweep_runs("t")
        assert [r.status for r in runs] == ["failed", "finished", "finished"]
        assert runs[2].name == runs[0].name == "t-vanilla-lam0-s0"


def test_sweep_modules_do_not_import_torch() -> None:
    code = "import caat_app.runs.sweep, sys; print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_both_methods_in_one_grid_each_with_its_own_parameter() -> None:
    from caat_app.runs.grid import expand, sweep_options

    base, lists, seeds = sweep_options(
        {"method": "vanilla,caat", "lam": "0,0.5,1", "gamma": "0.8,0.9"}, {}, "0,1"
    )
    configs = expand(base, lists, seeds)
    assert len(configs) == (3 + 2) * 2
    vanilla = sorted({c.lam for c in configs if c.method == "vanilla"})
    caat = sorted({c.gamma for c in configs if c.method == "caat"})
    assert (vanilla, caat) == ([0.0, 0.5, 1.0], [0.8, 0.9])
    assert {c.seed for c in configs} == {0, 1}
