"""caat's run store: SQLModel tables, a SQLite-in-WAL (or any SQLAlchemy) engine, batched writes.

Knows nothing of torch or Textual, so the dashboard can import it and start fast.
"""

from .location import caat_home, resolve_db_url
from .models import SCHEMA_VERSION, EpochMetric, EvalJob, EvalResult, Run, StepMetric
from .store import TERMINAL_STATUSES, BatchWriter, RunStatus, Store, StoreError

__all__ = [
    "SCHEMA_VERSION",
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
    "resolve_db_url",
]
