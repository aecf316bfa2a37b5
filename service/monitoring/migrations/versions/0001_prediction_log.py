"""The prediction log: predictions, labels, unmatched labels.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")
SECONDS = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("row_index", sa.Integer, nullable=False),
        sa.Column("passthrough_id", sa.Text),
        sa.Column("passthrough", sa.Text),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("scored_at", SECONDS, nullable=False),
        sa.Column("phat", SECONDS, nullable=False),
        sa.Column("outcome", sa.SmallInteger, nullable=False),
        sa.Column("inputs", sa.Text, nullable=False),
    )
    op.create_index("ix_predictions_request", "predictions", ["request_id", "row_index"])
    op.create_index("ix_predictions_passthrough_id", "predictions", ["passthrough_id"])
    op.create_index("ix_predictions_scored_at", "predictions", ["scored_at"])
    op.create_index("ix_predictions_batch", "predictions", ["batch_id"])
    op.create_table(
        "labels",
        sa.Column("request_id", sa.Text, primary_key=True),
        sa.Column("row_index", sa.Integer, primary_key=True),
        sa.Column("label", sa.SmallInteger, nullable=False),
        sa.Column("observed_at", SECONDS),
        sa.Column("received_at", SECONDS, nullable=False),
    )
    op.create_table(
        "unmatched_labels",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.Text),
        sa.Column("row_index", sa.Integer),
        sa.Column("passthrough_id", sa.Text),
        sa.Column("label", sa.SmallInteger, nullable=False),
        sa.Column("observed_at", SECONDS),
        sa.Column("received_at", SECONDS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("unmatched_labels")
    op.drop_table("labels")
    op.drop_index("ix_predictions_batch", "predictions")
    op.drop_index("ix_predictions_scored_at", "predictions")
    op.drop_index("ix_predictions_passthrough_id", "predictions")
    op.drop_index("ix_predictions_request", "predictions")
    op.drop_table("predictions")
