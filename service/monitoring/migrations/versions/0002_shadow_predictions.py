"""Shadow predictions: the challenger's result beside the served one, per live row it scored.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")
SECONDS = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "shadow_predictions",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("row_index", sa.Integer, nullable=False),
        sa.Column("scored_at", SECONDS, nullable=False),
        sa.Column("served_version", sa.Text, nullable=False),
        sa.Column("served_phat", SECONDS, nullable=False),
        sa.Column("served_outcome", sa.SmallInteger, nullable=False),
        sa.Column("shadow_version", sa.Text, nullable=False),
        sa.Column("shadow_phat", SECONDS),
        sa.Column("shadow_outcome", sa.SmallInteger),
    )
    op.create_index("ix_shadow_predictions_request", "shadow_predictions", ["request_id", "row_index"])
    op.create_index("ix_shadow_predictions_scored_at", "shadow_predictions", ["scored_at"])
    op.create_index("ix_shadow_predictions_batch", "shadow_predictions", ["batch_id"])


def downgrade() -> None:
    op.drop_index("ix_shadow_predictions_batch", "shadow_predictions")
    op.drop_index("ix_shadow_predictions_scored_at", "shadow_predictions")
    op.drop_index("ix_shadow_predictions_request", "shadow_predictions")
    op.drop_table("shadow_predictions")
