"""Schema version 2: workers' hosts, run ids that never repeat, the conflict lab's tables.

- `run.host` and `eval_job.host`: the machine a worker runs on, so a reaper checks a
  pid only on that machine and judges the others by their heartbeat.
- `run` gets SQLite's AUTOINCREMENT (the table is rebuilt): a deleted last run's id is
  never handed out again, so nothing of a deleted run is mistaken for a new one's.
- `lab_report` and `sample_conflict`, when the store predates them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA_VERSION = "2"
INT_COLUMNS = ("label", "pred_c", "pred_a")
# BIGINT on PostgreSQL as in the models; INTEGER on SQLite (its AUTOINCREMENT needs it).
BIG_INT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    tables = set(inspector.get_table_names())
    _lab_tables(tables)
    sqlite = bind.dialect.name == "sqlite"
    run_columns = {c["name"] for c in inspector.get_columns("run")}
    with op.batch_alter_table(
        "run",
        recreate="always" if sqlite else "auto",
        table_kwargs={"sqlite_autoincrement": True},
    ) as batch:
        if "host" not in run_columns:
            batch.add_column(sa.Column("host", sa.String(), nullable=True))
    if "host" not in {c["name"] for c in inspector.get_columns("eval_job")}:
        with op.batch_alter_table("eval_job") as batch:
            batch.add_column(sa.Column("host", sa.String(), nullable=True))
    meta = sa.table("caat_meta", sa.column("key", sa.String), sa.column("value", sa.String))
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value=SCHEMA_VERSION))


def _lab_tables(tables: set[str]) -> None:
    """The lab's tables as schema version 2 defines them, unless the store has them."""
    when = sa.DateTime(timezone=True)
    if "lab_report" not in tables:
        op.create_table(
            "lab_report",
            sa.Column("id", BIG_INT, primary_key=True),
            sa.Column("kind", sa.String(), nullable=False, index=True),
            sa.Column("run_id", BIG_INT, sa.ForeignKey("run.id", ondelete="CASCADE"), index=True),
            sa.Column("key", sa.String(), nullable=False),
            sa.Column("body", sa.String(), nullable=False),
            sa.Column("created_at", when, nullable=False),
            sa.Column("updated_at", when, nullable=False),
            sqlite_autoincrement=True,
        )
    if "sample_conflict" not in tables:
        floats = ("margin", "loss_c", "loss_a", "phi", "mu", "norm_c", "norm_a")
        op.create_table(
            "sample_conflict",
            sa.Column(
                "report_id",
                BIG_INT,
                sa.ForeignKey("lab_report.id", ondelete="CASCADE"),
                primary_key=True,
            ),
            sa.Column("sample", BIG_INT, primary_key=True),
            *(sa.Column(name, BIG_INT, nullable=False) for name in ("label", "pred_c", "pred_a")),
            *(sa.Column(name, sa.Float(), nullable=True) for name in floats),
        )


def downgrade() -> None:
    raise NotImplementedError("caat never downgrades a store: restore the upgrade's backup")
