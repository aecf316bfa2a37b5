"""The prediction log's tables, as SQLAlchemy Core sees them (the migrations in ./migrations create them).

- `predictions`: one row per scored row: the request id the service answered with (X-Request-ID) and the
  row's index in the request, the first pass-through id as text (what labels may key on) and every
  pass-through field as sent (JSON), the model version, when it was scored (epoch seconds, UTC), phat, the
  business outcome, and the raw values of the model's input columns (JSON). `batch_id` names the write it
  came in, so a replayed spool file is never written twice. (request_id, row_index) is not unique: a
  client may send the same X-Request-ID twice, and both calls are logged.
- `labels`: the outcome observed for one (request_id, row_index); at most one (a repeat is a duplicate,
  a different one a conflict, and the first stays).
- `unmatched_labels`: labels whose prediction is not in the log (yet): kept, and matched again when the
  performance is computed, so a label that arrives before its spooled prediction is not lost.
- `shadow_predictions` (migration 0002): one row per row shadow scoring compared (service/monitoring/
  shadow.py): the served row's (request_id, row_index), so the labels that come back for the served
  prediction label it too, both versions, and both models' phat and business outcome (the shadow's null
  where the challenger refused the row). A challenger is judged on these labelled live rows before it
  serves anyone (service/monitoring/shadow_performance.py).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
)

metadata = MetaData()

predictions = Table(
    "predictions",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("batch_id", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("row_index", Integer, nullable=False),
    Column("passthrough_id", Text),
    Column("passthrough", Text),
    Column("model_version", Text, nullable=False),
    Column("scored_at", Float(precision=53), nullable=False),
    Column("phat", Float(precision=53), nullable=False),
    Column("outcome", SmallInteger, nullable=False),
    Column("inputs", Text, nullable=False),
    Index("ix_predictions_request", "request_id", "row_index"),
    Index("ix_predictions_passthrough_id", "passthrough_id"),
    Index("ix_predictions_scored_at", "scored_at"),
    Index("ix_predictions_batch", "batch_id"),
)

labels = Table(
    "labels",
    metadata,
    Column("request_id", Text, primary_key=True),
    Column("row_index", Integer, primary_key=True),
    Column("label", SmallInteger, nullable=False),
    Column("observed_at", Float(precision=53)),
    Column("received_at", Float(precision=53), nullable=False),
)

unmatched_labels = Table(
    "unmatched_labels",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("request_id", Text),
    Column("row_index", Integer),
    Column("passthrough_id", Text),
    Column("label", SmallInteger, nullable=False),
    Column("observed_at", Float(precision=53)),
    Column("received_at", Float(precision=53), nullable=False),
)

shadow_predictions = Table(
    "shadow_predictions",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("batch_id", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("row_index", Integer, nullable=False),
    Column("scored_at", Float(precision=53), nullable=False),
    Column("served_version", Text, nullable=False),
    Column("served_phat", Float(precision=53), nullable=False),
    Column("served_outcome", SmallInteger, nullable=False),
    Column("shadow_version", Text, nullable=False),
    Column("shadow_phat", Float(precision=53)),
    Column("shadow_outcome", SmallInteger),
    Index("ix_shadow_predictions_request", "request_id", "row_index"),
    Index("ix_shadow_predictions_scored_at", "scored_at"),
    Index("ix_shadow_predictions_batch", "batch_id"),
)

SHADOW_COLUMNS = (
    "batch_id",
    "request_id",
    "row_index",
    "scored_at",
    "served_version",
    "served_phat",
    "served_outcome",
    "shadow_version",
    "shadow_phat",
    "shadow_outcome",
)

PREDICTION_COLUMNS = (
    "batch_id",
    "request_id",
    "row_index",
    "passthrough_id",
    "passthrough",
    "model_version",
    "scored_at",
    "phat",
    "outcome",
    "inputs",
)
