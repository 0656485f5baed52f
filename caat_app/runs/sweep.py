"""Sweeps: a grid of runs recorded under one name, and the loop that works through it.

A sweep is only a label on runs (`Run.sweep`), so the dashboard, `caat runs` and the
SA-AA front see its runs like any other. Adding a grid to a sweep queues just the
configs it does not hold yet, which is what makes a sweep resumable. Torch-free: the
CLI and the dashboard use it; worker processes do the training.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any, Literal

from caat_app.config import ConfigError, RunConfig, build_config, config_from_json, parse_budget
from caat_app.errors import CaatError
from caat_app.runs.launcher import Gpu, Launch, Scheduler, launch_worker
from caat_app.runs.manage import cancel_run, pid_alive, run_fields
from caat_storage import Run, RunStatus, Store
from caat_storage.store import check_sweep_name

Kind = Literal["float", "int", "budget", "str"]

LIST_KINDS: dict[str, Kind] = {
    "method": "str",
    "lam": "float",
    "gamma": "float",
    "beta": "float",
    "eps": "budget",
    "alpha": "budget",
    "attack_steps": "int",
    "eval_steps": "int",
    "epochs": "int",
    "batch_size": "int",
    "lr": "float",
    "momentum": "float",
    "weight_decay": "float",
    "seed": "int",
    "eval_n": "int",
    "loss": "str",
    "model": "str",
    "attack": "str",
    "norm": "str",
    "projection": "str",
    "bn": "str",
}
"""The options a sweep may vary, and how one item of their comma list is read."""

# A run counts as done or on its way in these states; any other is tried again.
PRESENT = (RunStatus.QUEUED.value, RunStatus.RUNNING.value, RunStatus.FINISHED.value)
ACTIVE = (RunStatus.QUEUED.value, RunStatus.RUNNING.value)
STATUS_ORDER = ("finished", "failed", "diverged", "cancelled", "running", "queued")

# Options a method ignores: varying them would only train the same run again.
_USED_BY = {"lam": ("method", "vanilla"), "gamma": ("method", "caat")}
# With both methods in one grid, each takes its own parameter's list and drops the other's.
_IGNORED_BY = {"vanilla": "gamma", "caat": "lam"}


# --------------------------------------------------------------------------- the grid


def parse_list(text: str, kind: Kind, *, option: str = "value") -> list[Any]:
    """`0,0.25,0.5` → [0.0, 0.25, 0.5]: one typed value per comma-separated item.

    `budget` reads `8/255` too (eps, alpha). A single value is a list of one. Any bad
    item is a one-line ConfigError naming `option`, before anything is recorded.
    """
    items = [item.strip() for item in text.split(",")]
    if any(not item for item in items):
        raise ConfigError(f"{option}: empty item in {text!r}; separate values by commas: 0,0.5,1")
    values: list[Any] = []
    for item in items:
        try:
            values.append(_parse_item(item, kind))
        except ValueError as exc:
            raise ConfigError(f"{option}: {exc}") from None
    return values


def _parse_item(item: str, kind: Kind) -> Any:
    if kind == "str":
        return item
    if kind == "budget":
        return parse_budget(item)
    if kind == "int":
        try:
            return int(item)
        except ValueError:
            raise ValueError(f"expected whole numbers separated by commas, got {item!r}") from None
    try:
        number = float(item)
    except ValueError:
        raise ValueError(f"expected numbers separated by commas, got {item!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"must be finite, got {item!r}")
    return number


def sweep_options(
    options: Mapping[str, Any], file_values: Mapping[str, Any], seeds: str | None = None
) -> tuple[dict[str, Any], dict[str, list[Any]], list[int]]:
    """Split a sweep's options into (base, lists, seeds) for `expand`.

    `options` are the command line's (comma lists as text, None: not given), over
    `file_values` (a TOML file, where a list value is a list to sweep, and `seeds` may
    be given). `--seed 0,1` and `--seeds 0,1` are the same axis; both at once is refused.
    """
    base: dict[str, Any] = {}
    lists: dict[str, list[Any]] = {}
    file_seeds = file_values.get("seeds")
    given = {k: v for k, v in options.items() if v is not None}
    for key, value in {**file_values, **given}.items():
        if key == "seeds":
            continue
        kind = LIST_KINDS.get(key)
        if isinstance(value, list):
            if kind is None:
                raise ConfigError(f"{key}: cannot be swept; give one value")
            values = list(value)
        elif isinstance(value, str) and kind is not None:
            values = parse_list(value, kind, option=key)
        else:
            base[key] = value
            continue
        if len(values) == 1:
            base[key] = values[0]
        else:
            lists[key] = values
    seed_list: list[int] = []
    if seeds is not None:
        if "seed" in given:
            raise ConfigError("seeds: give --seed or --seeds, not both")
        seed_list = parse_list(seeds, "int", option="seeds")
    elif file_seeds is not None and "seed" not in given:  # the command line wins
        if not isinstance(file_seeds, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in file_seeds
        ):
            raise ConfigError(f"seeds: expected a list of whole numbers, got {file_seeds!r}")
        seed_list = list(file_seeds)
    if not seed_list and "seed" in lists:
        seed_list = lists.pop("seed")
    if seed_list:
        base.pop("seed", None)
        lists.pop("seed", None)
    return base, lists, seed_list


def expand(
    base: dict[str, Any], lists: dict[str, list[Any]], seeds: Sequence[int]
) -> list[RunConfig]:
    """Every combination of the list values, times the seeds, each applied over `base`.

    Each is validated by `build_config`; the first bad one raises a ConfigError naming
    the combination, so a grid is checked whole before any of it is recorded. Seeds
    vary fastest. No seeds: the seed of `base` (or the default). Repeated combinations
    come out once. Varying λ under CA-AT or γ under Vanilla AT is refused: those runs
    would differ in an option the method never reads.
    """
    if "seed" in lists and seeds:
        raise ConfigError("seeds: give --seed or --seeds, not both")
    if "method" in lists:  # `--method vanilla,caat --lam 0,0.5,1 --gamma 0.8,0.9`: one grid each
        combined: dict[str, RunConfig] = {}
        for method in lists["method"]:
            ignored = _IGNORED_BY.get(method)
            own = {k: v for k, v in lists.items() if k not in {"method", ignored}}
            for cfg in expand({**base, "method": method}, own, seeds):
                combined.setdefault(config_key(cfg), cfg)
        return list(combined.values())
    for key, values in lists.items():
        if not values:
            raise ConfigError(f"{key}: an empty list of values")
    keys = list(lists)
    seed_axis: list[int | None] = list(seeds) if seeds else [None]
    varied = {key for key, values in lists.items() if len(set(map(repr, values))) > 1}
    configs: list[RunConfig] = []
    seen: set[str] = set()
    for combo in product(*(lists[key] for key in keys), seed_axis):
        values = dict(zip(keys, combo[:-1], strict=True))
        if combo[-1] is not None:
            values["seed"] = combo[-1]
        try:
            cfg = build_config({**base, **values})
        except ConfigError as exc:
            where = ", ".join(f"{k}={v}" for k, v in values.items())
            raise ConfigError(
                f"{exc} (in the combination {where})" if where else str(exc)
            ) from None
        for key in varied & set(_USED_BY):
            field, wanted = _USED_BY[key]
            if getattr(cfg, field) != wanted:
                raise ConfigError(
                    f"{key}: only {wanted} reads it, but the method is {cfg.method}; "
                    f"add --method {wanted} (a sweep can hold both: run it twice, one --name)"
                )
        ident = config_key(cfg)
        if ident not in seen:
            seen.add(ident)
            configs.append(cfg)
    return configs


def config_key(config: RunConfig | Mapping[str, Any]) -> str:
    """What makes two runs the same run: every option but the name, canonically ordered.

    A stored config is read through `config_from_json` first, so one stored before an
    option existed matches a new one that leaves it at its default.
    """
    cfg = config if isinstance(config, RunConfig) else config_from_json(dict(config))
    data = cfg.model_dump(mode="json")
    data.pop("name", None)
    return json.dumps(data, sort_keys=True)


def _short(key: str, value: Any) -> str:
    return f"{key}{_value(value)}"


def name_runs(sweep: str, configs: Sequence[RunConfig]) -> list[RunConfig]:
    """Give each config its run name: `<sweep>-vanilla-lam0.25-s1`, `<sweep>-caat-gamma0.8-s0`.

    Other options that differ within the grid are named too (`-eps0.1`), so no two
    runs of one grid share a name.
    """
    sweep = check_sweep(sweep)
    fixed = {"name", "method", "lam", "gamma", "seed"}
    differ = [
        field
        for field in RunConfig.model_fields
        if field not in fixed and len({repr(getattr(c, field)) for c in configs}) > 1
    ]
    named = []
    for cfg in configs:
        param = "lam" if cfg.method == "vanilla" else "gamma"
        parts = [sweep, cfg.method, _short(param, cfg.param)]
        parts += [_short(field, getattr(cfg, field)) for field in differ]
        parts.append(f"s{cfg.seed}")
        named.append(config_from_json({**cfg.model_dump(mode="json"), "name": "-".join(parts)}))
    return named


def check_sweep(name: str) -> str:
    """A sweep name, stripped, or a one-line ConfigError."""
    try:
        return check_sweep_name(name)
    except ValueError as exc:
        raise ConfigError(f"--name: {exc}") from None


# --------------------------------------------------------------------------- the store


def plan_sweep(
    store: Store, name: str, configs: Sequence[RunConfig]
) -> tuple[list[int], list[int]]:
    """Queue in sweep `name` the configs it does not hold; returns (new ids, held ids).

    A config is held when a run of the sweep with the same config (the name aside) is
    finished, queued or running; a failed, cancelled or diverged one is queued again as
    a new run, and the old one stays as history. Held ids: one per held config, its
    newest such run.
    """
    name = check_sweep(name)
    return store.add_to_sweep(name, [run_fields(cfg) for cfg in configs], key=config_key)


def sweep_configs(store: Store, name: str) -> list[RunConfig]:
    """The distinct configs a sweep holds (each under its first run's name), oldest first."""
    configs: dict[str, RunConfig] = {}
    for run in store.sweep_runs(name):
        try:
            cfg = config_from_json(json.loads(run.config))
        except (ValueError, TypeError):
            continue  # unreadable: it cannot be run again anyway
        configs.setdefault(config_key(cfg), cfg)
    return list(configs.values())


def _run_key(run: Run) -> str:
    try:
        return config_key(json.loads(run.config))
    except (ValueError, TypeError):
        return f"run {run.id}"


def current_runs(runs: Iterable[Run]) -> list[Run]:
    """One run per config of the grid: its newest held run, else its newest attempt.

    A config that failed and was queued again is counted once, by its new run; the
    failed attempt is history.
    """
    best: dict[str, Run] = {}
    for run in runs:  # oldest first: a later run replaces an earlier one of its kind
        key = _run_key(run)
        held = best.get(key)
        if held is None or run.status in PRESENT or held.status not in PRESENT:
            best[key] = run
    return sorted(best.values(), key=lambda r: r.id or 0)


def status_counts(runs: Iterable[Run]) -> dict[str, int]:
    """How many of the grid's configs are in each status (see `current_runs`)."""
    counts = dict.fromkeys(STATUS_ORDER, 0)
    for run in current_runs(runs):
        counts[run.status] = counts.get(run.status, 0) + 1
    return counts


# --------------------------------------------------------------------------- running


def _stop(store: Store, runs: Sequence[Run], asked: set[int]) -> None:
    """Cancel what is queued and ask running workers to stop, each once.

    A run a dispatcher has claimed but not started yet (no pid) is asked on a later
    poll; one whose worker turns out dead is recorded failed by `cancel_run`.
    """
    for run in runs:
        assert run.id is not None
        if run.status not in ACTIVE or run.id in asked:
            continue
        try:
            cancel_run(store, run)
        except CaatError:
            now = store.get_run(run.id)
            if now is not None and now.status == RunStatus.RUNNING and now.pid is None:
                continue  # claimed a moment ago: its worker has no pid to signal yet
        asked.add(run.id)


def run_sweep(
    store: Store,
    name: str,
    *,
    jobs: int,
    gpus: list[Gpu],
    poll: float = 1.0,
    on_progress: Callable[[dict[str, int]], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    launch: Launch = launch_worker,
    stale_timeout: float = 60.0,
    stop_timeout: float = 120.0,
) -> dict[str, int]:
    """Start the sweep's queued runs, at most `jobs` at once, until none is queued or running.

    Workers are separate processes (started by `launch`), so a run started here, by a
    dashboard or by another `caat sweep` is all the same: this loop only dispatches
    and watches the store. Each GPU takes up to `jobs` runs and the CPU `jobs`, as the
    launcher counts them machine-wide, and the sweep never has more than `jobs` running.
    When `should_stop()` turns true, queued runs are cancelled and running workers
    asked to stop (they checkpoint and end `cancelled`); it waits up to `stop_timeout`
    seconds for them. Returns the status counts of the grid (`status_counts`).
    """
    name = check_sweep(name)
    if jobs < 1:
        raise ConfigError(f"--jobs: must be at least 1, got {jobs}")
    scheduler = Scheduler(store, gpus=gpus, per_gpu=jobs, max_cpu=jobs, launch=launch)
    stopping_since: float | None = None
    asked: set[int] = set()
    while True:
        store.reap_stale(timeout=stale_timeout, is_alive=pid_alive)
        if stopping_since is None and should_stop():
            stopping_since = time.monotonic()
        runs = store.sweep_runs(name)
        if stopping_since is not None:
            _stop(store, runs, asked)
            runs = store.sweep_runs(name)
        else:
            running = sum(r.status == RunStatus.RUNNING for r in runs)
            queued = [r.id for r in runs if r.status == RunStatus.QUEUED and r.id is not None]
            if queued and running < jobs:
                scheduler.dispatch(only=queued[: jobs - running])
                runs = store.sweep_runs(name)
        counts = status_counts(runs)
        if on_progress is not None:
            on_progress(counts)
        if not any(r.status in ACTIVE for r in runs):
            return counts
        if stopping_since is not None and time.monotonic() - stopping_since > stop_timeout:
            return counts
        _sleep(poll, should_stop if stopping_since is None else lambda: False)


def _sleep(seconds: float, wake: Callable[[], bool]) -> None:
    """Sleep, but wake early when `wake()` turns true (a Ctrl-C is answered at once)."""
    deadline = time.monotonic() + seconds
    while not wake():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.1))


# --------------------------------------------------------------------------- terminal


@dataclass(frozen=True)
class SweepRow:
    """One line of a sweep's results table: the run, what sets it apart, its seed."""

    run: Run
    label: str
    seed: int | None


def sweep_rows(runs: Sequence[Run]) -> list[SweepRow]:
    """The grid's current runs (`current_runs`), labelled by method, parameter and any
    other option that differs between them."""
    current = current_runs(runs)
    configs: list[dict[str, Any]] = []
    for run in current:
        try:
            data = json.loads(run.config)
        except ValueError:
            data = {}
        configs.append(data if isinstance(data, dict) else {})
    fixed = {"name", "method", "lam", "gamma", "seed"}
    keys = sorted({k for c in configs for k in c} - fixed)
    differ = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]
    rows = []
    for run, data in zip(current, configs, strict=True):
        symbol = "γ" if run.method == "caat" else "λ"
        param = "-" if run.param is None else f"{run.param:g}"
        label = " ".join(
            [f"{run.method} {symbol}={param}"] + [f"{k}={_value(data.get(k))}" for k in differ]
        )
        seed = data.get("seed")
        rows.append(SweepRow(run, label, seed if isinstance(seed, int) else None))
    return rows


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def counts_text(counts: Mapping[str, int]) -> str:
    """`finished 3 · running 2 · queued 1`: the statuses that have runs, in a fixed order."""
    order = [s for s in STATUS_ORDER if counts.get(s)] + [
        s for s in counts if s not in STATUS_ORDER and counts[s]
    ]
    return " · ".join(f"{status} {counts[status]}" for status in order) or "no runs"
