"""The store's tables: one row per run, its step and epoch metrics, its evaluations and
the conflict lab's results."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from .status import RunStatus

SCHEMA_VERSION = 2
"""Bump with every migration in `migrations/versions` (which sets it in `caat_meta`): a
caat that reads an older number refuses the store instead of misreading it."""


BIG_INT = BigInteger().with_variant(Integer(), "sqlite")
"""Every integer column: BIGINT on PostgreSQL (steps, sizes and ids outgrow 32 bits in a
long-lived shared store); SQLite's INTEGER is 64-bit already and must stay INTEGER, the
only type its AUTOINCREMENT accepts."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    SQLite keeps no time zone, so values are stored as UTC and given their zone back
    on the way out; comparing an aware and a naive datetime would otherwise raise.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        # SQLite's DATETIME has no zone; everything stored there is UTC by this rule.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Run(SQLModel, table=True):
    """One training run: its config, where it is in its life, and its headline numbers.

    The headline numbers are copied here so the run list needs no metric query.
    """

    __tablename__ = "run"
    # Ids never repeat (SQLite would reuse a deleted last one): nothing a deleted run
    # left behind is ever taken for a new run's.
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True, sa_type=BIG_INT)
    name: str = Field(index=True)
    # The sweep the run belongs to (`caat sweep --name`); None for a lone run. Indexed:
    # a sweep's progress and its front are queries by this column.
    sweep: str | None = Field(default=None, index=True)
    status: str = Field(default=RunStatus.QUEUED.value, index=True)
    method: str
    param: float | None = None  # γ for caat, λ for vanilla
    dataset: str
    model: str
    eps: float
    config: str  # JSON text of the full config
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    heartbeat_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    pid: int | None = Field(default=None, sa_type=BIG_INT)
    # The machine the worker runs on: its pid means something only there.
    host: str | None = None
    # Physical GPU index (nvidia-smi order) the scheduler gave the run; None: CPU, or
    # started outside the scheduler. Per-GPU load is counted from this column.
    gpu: int | None = Field(default=None, sa_type=BIG_INT)
    run_dir: str = ""
    error: str | None = None  # full traceback of a failed run
    epochs_total: int = Field(sa_type=BIG_INT)
    epochs_done: int = Field(default=0, sa_type=BIG_INT)
    steps_done: int = Field(default=0, sa_type=BIG_INT)
    nonfinite_steps: int = Field(default=0, sa_type=BIG_INT)
    last_phi: float | None = None
    last_mu: float | None = None
    best_epoch: int | None = Field(default=None, sa_type=BIG_INT)
    best_val_clean: float | None = None
    best_val_adv: float | None = None
    best_test_clean: float | None = None
    best_test_adv: float | None = None
    last_val_clean: float | None = None
    last_val_adv: float | None = None
    last_test_clean: float | None = None
    last_test_adv: float | None = None
    notes: str = ""
    tags: str = ""


class StepMetric(SQLModel, table=True):
    """Per-step training signals: the losses, the conflict φ/μ and the update's shape.

    The floats are nullable because SQLite stores NaN as NULL, and a diverging run
    must still be able to record the step that diverged.
    """

    __tablename__ = "step_metric"

    run_id: int = Field(foreign_key="run.id", primary_key=True, ondelete="CASCADE", sa_type=BIG_INT)
    step: int = Field(primary_key=True, sa_type=BIG_INT)
    epoch: int = Field(sa_type=BIG_INT)
    t: float  # seconds since the run started
    loss_c: float | None = None
    loss_a: float | None = None
    acc_c: float | None = None
    acc_a: float | None = None
    phi: float | None = None
    mu: float | None = None
    norm_c: float | None = None
    norm_a: float | None = None
    coef_c: float | None = None
    projected: float | None = None
    lr: float | None = None
    skipped: bool = False


class EpochMetric(SQLModel, table=True):
    """Per-epoch accuracies and throughput; written again as later evaluations complete."""

    __tablename__ = "epoch_metric"

    run_id: int = Field(foreign_key="run.id", primary_key=True, ondelete="CASCADE", sa_type=BIG_INT)
    epoch: int = Field(primary_key=True, sa_type=BIG_INT)
    train_loss_c: float | None = None
    train_loss_a: float | None = None
    train_clean: float | None = None
    train_adv: float | None = None
    val_clean: float | None = None
    val_adv: float | None = None
    test_clean: float | None = None
    test_adv: float | None = None
    images_per_sec: float | None = None
    epoch_seconds: float | None = None
    elapsed: float | None = None
    lr: float | None = None


class EvalResult(SQLModel, table=True):
    """One attack at one budget on one checkpoint: what `caat eval` measured.

    `settings` holds the attack's settings as JSON; together with the run, checkpoint
    and its weights, attack, norm, ε and sample count it identifies an evaluation, so an
    identical one is reused instead of run again.
    """

    __tablename__ = "eval_result"

    id: int | None = Field(default=None, primary_key=True, sa_type=BIG_INT)
    run_id: int = Field(foreign_key="run.id", index=True, ondelete="CASCADE", sa_type=BIG_INT)
    checkpoint: str
    # Which weights the checkpoint held ("epoch 12, step 3400"): `best` moves while a
    # run trains, and a result belongs to the weights it was measured on.
    weights: str = ""
    attack: str
    norm: str
    eps: float
    samples: int = Field(sa_type=BIG_INT)
    accuracy: float
    seconds: float
    settings: str = "{}"
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class EvalJob(SQLModel, table=True):
    """One `caat eval` request and where it is in its life; its results are EvalResults.

    A worker (or the CLI in the foreground) runs it, reports `done` of `total`
    measurements and what it measures now, and keeps a heartbeat like a training run.
    """

    __tablename__ = "eval_job"

    id: int | None = Field(default=None, primary_key=True, sa_type=BIG_INT)
    run_id: int = Field(foreign_key="run.id", index=True, ondelete="CASCADE", sa_type=BIG_INT)
    status: str = Field(default=RunStatus.QUEUED.value, index=True)
    spec: str  # JSON text of the checked request (caat_app.evaluation.plan.EvalSpec)
    done: int = Field(default=0, sa_type=BIG_INT)
    total: int = Field(default=0, sa_type=BIG_INT)
    current: str = ""
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    heartbeat_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    pid: int | None = Field(default=None, sa_type=BIG_INT)
    host: str | None = None  # the machine the worker runs on
    error: str | None = None


class RunLayer(SQLModel, table=True):
    """A run's parameter tensors, in flat-buffer order: what `LayerMetric.layer` indexes.

    Written once per run that records per-layer conflict (`layer_stats`).
    """

    __tablename__ = "run_layer"

    run_id: int = Field(foreign_key="run.id", primary_key=True, ondelete="CASCADE", sa_type=BIG_INT)
    layer: int = Field(primary_key=True, sa_type=BIG_INT)
    name: str
    size: int = Field(sa_type=BIG_INT)  # number of parameters


class LayerMetric(SQLModel, table=True):
    """The conflict of one parameter tensor at one step: φ, μ and the two norms.

    Nullable floats as in `StepMetric`: SQLite stores NaN as NULL.
    """

    __tablename__ = "layer_metric"

    run_id: int = Field(foreign_key="run.id", primary_key=True, ondelete="CASCADE", sa_type=BIG_INT)
    step: int = Field(primary_key=True, sa_type=BIG_INT)
    layer: int = Field(primary_key=True, sa_type=BIG_INT)
    epoch: int = Field(sa_type=BIG_INT)
    phi: float | None = None
    mu: float | None = None
    norm_c: float | None = None
    norm_a: float | None = None


class LabReport(SQLModel, table=True):
    """One result of the conflict lab: a run's per-sample conflict report, or one
    synthetic experiment (`kind`), for the dashboard to draw without computing anything.

    `body` is the report as JSON; a per-sample report's columns are `SampleConflict`
    rows. `key` names the computation's settings: the same computation again replaces
    its report instead of piling copies up.
    """

    __tablename__ = "lab_report"
    # Ids never repeat (SQLite would reuse a deleted last one): a poller's stamp stays true.
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True, sa_type=BIG_INT)
    kind: str = Field(index=True)
    run_id: int | None = Field(
        default=None, foreign_key="run.id", index=True, ondelete="CASCADE", sa_type=BIG_INT
    )
    key: str = ""
    body: str = "{}"
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class SampleConflict(SQLModel, table=True):
    """One training image's conflict in a per-sample report: φ_i, μ_i and what they are
    compared with. `sample` is the image's index in the run's training split."""

    __tablename__ = "sample_conflict"

    report_id: int = Field(
        foreign_key="lab_report.id", primary_key=True, ondelete="CASCADE", sa_type=BIG_INT
    )
    sample: int = Field(primary_key=True, sa_type=BIG_INT)
    label: int = Field(sa_type=BIG_INT)
    pred_c: int = Field(sa_type=BIG_INT)
    pred_a: int = Field(sa_type=BIG_INT)
    margin: float | None = None
    loss_c: float | None = None
    loss_a: float | None = None
    phi: float | None = None
    mu: float | None = None
    norm_c: float | None = None
    norm_a: float | None = None


class Meta(SQLModel, table=True):
    """Key/value facts about the store itself, `schema_version` first of all."""

    __tablename__ = "caat_meta"

    key: str = Field(primary_key=True)
    value: str


TABLES: list[Any] = [
    Run.__table__,  # type: ignore[attr-defined]
    StepMetric.__table__,  # type: ignore[attr-defined]
    EpochMetric.__table__,  # type: ignore[attr-defined]
    EvalResult.__table__,  # type: ignore[attr-defined]
    EvalJob.__table__,  # type: ignore[attr-defined]
    RunLayer.__table__,  # type: ignore[attr-defined]
    LayerMetric.__table__,  # type: ignore[attr-defined]
    LabReport.__table__,  # type: ignore[attr-defined]
    SampleConflict.__table__,  # type: ignore[attr-defined]
    Meta.__table__,  # type: ignore[attr-defined]
]
"""Only our tables: other SQLModel tables that happen to be imported are not ours to create."""
