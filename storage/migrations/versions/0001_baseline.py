"""The schema of caat's first release (schema version 1): the baseline every later
migration starts from. A version-1 store has no `alembic_version` table; it is stamped
with this revision before it is upgraded.

Revision ID: 0001
Revises:
Create Date: 2026-11-20
"""

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing: version-1 stores were created whole by `SQLModel.metadata.create_all`."""


def downgrade() -> None:
    raise NotImplementedError("caat never downgrades a store: restore the upgrade's backup")
