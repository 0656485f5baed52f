"""caat's run store: SQLModel tables, a SQLite-in-WAL (or any SQLAlchemy) engine, batched writes.

Knows nothing of torch or Textual. Importing the package is light: where the store lives,
the statuses, the name rules and the error load at once; the store itself, its tables and
the writer (SQLAlchemy, SQLModel) load on first use of their names (PEP 562), so that the
CLI's start and the dashboard's first paint do not pay for them.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import StoreError, StoreUnreachable
from .labels import check_name, check_sweep_name, lost_worker_error, normalise_tags, split_tags
from .location import ARTIFACTS_ENV, artifacts_root, caat_home, resolve_db_url
from .status import ACTIVE_STATUSES, TERMINAL_STATUSES, RunStatus

if TYPE_CHECKING:
    from .models import SCHEMA_VERSION, EpochMetric, EvalJob, EvalResult, Run, StepMetric
    from .runs import SEARCH_COLUMNS, SORTABLE_COLUMNS, list_statement
    from .store import Store
    from .writer import BatchWriter

_LAZY = {
    "SCHEMA_VERSION": ".models",
    "EpochMetric": ".models",
    "EvalJob": ".models",
    "EvalResult": ".models",
    "Run": ".models",
    "StepMetric": ".models",
    "SEARCH_COLUMNS": ".runs",
    "SORTABLE_COLUMNS": ".runs",
    "list_statement": ".runs",
    "Store": ".store",
    "BatchWriter": ".writer",
}


def __getattr__(name: str) -> Any:
    """Import a heavy name's module when it is first asked for."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "ACTIVE_STATUSES",
    "ARTIFACTS_ENV",
    "SCHEMA_VERSION",
    "SEARCH_COLUMNS",
    "SORTABLE_COLUMNS",
    "TERMINAL_STATUSES",
    "BatchWriter",
    "EpochMetric",
    "EvalJob",
    "EvalResult",
    "Run",
    "RunStatus",
    "StepMetric",
    "Store",
    "StoreError",
    "StoreUnreachable",
    "artifacts_root",
    "caat_home",
    "check_name",
    "check_sweep_name",
    "list_statement",
    "lost_worker_error",
    "normalise_tags",
    "resolve_db_url",
    "split_tags",
]
