"""caat's run store: SQLModel tables, a SQLite-in-WAL (or any SQLAlchemy) engine, batched writes.

Knows nothing of torch or Textual, so the dashboard can import it and start fast.
"""

from .base import StoreError
from .labels import check_name, check_sweep_name, lost_worker_error, normalise_tags, split_tags
from .location import caat_home, resolve_db_url
from .models import SCHEMA_VERSION, EpochMetric, EvalJob, EvalResult, Run, StepMetric
from .runs import SEARCH_COLUMNS, SORTABLE_COLUMNS, list_statement
from .status import TERMINAL_STATUSES, RunStatus
from .store import Store
from .writer import BatchWriter

__all__ = [
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
    "caat_home",
    "check_name",
    "check_sweep_name",
    "list_statement",
    "lost_worker_error",
    "normalise_tags",
    "resolve_db_url",
    "split_tags",
]
