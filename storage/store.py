"""The run store: the one place that reads and writes runs and their metrics.

`Store` is composed of one part per domain (runs, their life, sweeps, metrics,
per-layer conflict, the lab's reports, evaluations, evaluation jobs), each in its own
module over the shared `StoreBase`.
The names this module exported before the split are still importable from here.
"""

from pathlib import Path
from typing import Self

from sqlalchemy.exc import SQLAlchemyError

from .base import StoreError, describe_location, one_line, unreachable
from .engine import make_engine
from .evals import EvalsMixin
from .jobs import JobsMixin
from .lab import LabMixin
from .labels import (
    MAX_NAME_LENGTH,
    MAX_SWEEP_LENGTH,
    check_name,
    check_sweep_name,
    lost_worker_error,
    normalise_tags,
    split_tags,
)
from .layers import LayersMixin
from .lifecycle import LifecycleMixin
from .metrics import MetricsMixin
from .runs import SEARCH_COLUMNS, SORTABLE_COLUMNS, RunsMixin
from .schema import prepare_schema
from .status import TERMINAL_STATUSES, RunStatus
from .sweeps import SweepsMixin
from .writer import BatchWriter

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_SWEEP_LENGTH",
    "SEARCH_COLUMNS",
    "SORTABLE_COLUMNS",
    "TERMINAL_STATUSES",
    "BatchWriter",
    "RunStatus",
    "Store",
    "StoreError",
    "check_name",
    "check_sweep_name",
    "lost_worker_error",
    "normalise_tags",
    "split_tags",
]


class Store(
    RunsMixin,
    LifecycleMixin,
    SweepsMixin,
    MetricsMixin,
    LayersMixin,
    LabMixin,
    EvalsMixin,
    JobsMixin,
):
    """Runs and metrics in one database, safe to share between processes.

    Build it with `Store.open`; every method runs its own short transaction, so a
    Store can be kept open for the life of a dashboard or a worker.
    """

    @classmethod
    def open(cls, url: str, *, artifacts: Path | str | None = None) -> Self:
        """Connect and make sure the schema is there and is one this code understands.

        `artifacts`: the root run folders live under (`location.artifacts_root`).
        """
        where = describe_location(url)
        try:
            engine = make_engine(url)
        except ImportError as exc:
            hint = "; pip install 'caat[postgres]'" if url.startswith("postgresql") else ""
            raise StoreError(f"cannot open the store at {where}: {one_line(exc)}{hint}") from exc
        except (SQLAlchemyError, OSError, ValueError) as exc:
            raise StoreError(f"cannot open the store at {where}: {one_line(exc)}") from exc
        store = cls(url, engine, artifacts)
        try:
            opened = prepare_schema(store._writer, where)
        except StoreError:
            engine.dispose()
            raise
        except (SQLAlchemyError, OSError, ImportError) as exc:
            engine.dispose()
            lost = unreachable(exc, engine.dialect.name, where)
            if lost is not None:
                raise lost from exc
            raise StoreError(f"cannot open the store at {where}: {one_line(exc)}") from exc
        store._store_id, store.upgraded = opened.store_id, opened.upgraded
        return store
