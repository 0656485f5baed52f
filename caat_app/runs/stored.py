"""A run's stored config, read in one place: the store keeps it as JSON text.

Torch-free. `options_of` is the raw table (what `caat show` and comparisons print),
`config_of` the validated `RunConfig` (what a worker trains and an evaluation rebuilds).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from caat_app.errors import CaatError

if TYPE_CHECKING:
    from caat_app.config import RunConfig
    from caat_storage import Run


def options_of(run: Run) -> dict[str, Any]:
    """The run's stored options, or a CaatError naming the run when they cannot be read."""
    try:
        options = json.loads(run.config)
    except (TypeError, ValueError):
        raise CaatError(f"run {run.id}: its stored config is not valid JSON") from None
    if not isinstance(options, dict):
        raise CaatError(f"run {run.id}: its stored config is not a table of options")
    return options


def option(run: Run, name: str, default: Any = None) -> Any:
    """One stored option, `default` when it is missing or the config cannot be read.

    For what is only shown (a chart's γ line, a table's note): a damaged config must not
    take a screen down.
    """
    try:
        return options_of(run).get(name, default)
    except CaatError:
        return default


def config_of(run: Run) -> RunConfig:
    """The run's config, validated again: the store is not trusted blindly."""
    from caat_app.config import config_from_json

    return config_from_json(options_of(run))
