"""A sweep's grid: comma lists of options, expanded into validated configs and named.

Pure and torch-free: nothing here reads or writes the store. The launch form and
`caat sweep` parse and check a whole grid here before any of it is recorded;
`caat_app.runs.sweep` queues it and works through it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from itertools import product
from typing import TYPE_CHECKING, Any, Literal

from caat_app.errors import ConfigError
from caat_app.present import parse_budget
from caat_storage import check_sweep_name

if TYPE_CHECKING:
    from caat_app.config import RunConfig

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
    "schedule": "str",
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


# Options a method ignores: varying them would only train the same run again.
_USED_BY = {"lam": ("method", "vanilla"), "gamma": ("method", "caat")}
# With both methods in one grid, each takes its own parameter's list and drops the other's.
_IGNORED_BY = {"vanilla": "gamma", "caat": "lam"}


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
    from caat_app.config import build_config

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
    from caat_app.config import RunConfig, config_from_json

    cfg = config if isinstance(config, RunConfig) else config_from_json(dict(config))
    data = cfg.model_dump(mode="json")
    data.pop("name", None)
    return json.dumps(data, sort_keys=True)


def _short(key: str, value: Any) -> str:
    return f"{key}{value_text(value)}"


def name_runs(sweep: str, configs: Sequence[RunConfig]) -> list[RunConfig]:
    """Give each config its run name: `<sweep>-vanilla-lam0.25-s1`, `<sweep>-caat-gamma0.8-s0`.

    Other options that differ within the grid are named too (`-eps0.1`), so no two
    runs of one grid share a name.
    """
    from caat_app.config import RunConfig, config_from_json

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


def value_text(value: Any) -> str:
    """An option's value in a run name or a table label: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)
