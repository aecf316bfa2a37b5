"""The prediction log's database: SQLite (the embedded default) or PostgreSQL (a cluster), one schema.

SQLAlchemy Core for the queries that both speak, Alembic for the schema (`migrate`, under a lock so that
workers starting together run it once), and the bulk path each database is fastest at: PostgreSQL's
COPY FROM STDIN through psycopg, multi-row INSERTs on SQLite. Every write of predictions is one
transaction named by its `batch_id`: a batch is in the log whole or not at all, and writing a batch
that is already there (a spool file replayed twice after a crash) writes nothing.
"""

from __future__ import annotations

import fcntl
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

from service.errors import PredictionLogUnavailable
from service.monitoring.log_schema import PREDICTION_COLUMNS, SHADOW_COLUMNS
from service.monitoring.performance import PredictionFrame

MIGRATIONS = Path(__file__).parent / "migrations"
# A key every worker's migration waits on (PostgreSQL advisory lock): any constant, the same everywhere.
MIGRATION_LOCK = 0x70726F70
# Rows per IN (...) list: far below either database's limit on bound parameters.
CHUNK = 500
# Rows per SQLite INSERT: 10 parameters each, under SQLite's 32,766 bound parameters per statement.
SQLITE_ROWS = 3_000
Row = tuple[Any, ...]  # one predictions row, in PREDICTION_COLUMNS order (a shadow row: SHADOW_COLUMNS)
TABLE_COLUMNS = {"predictions": PREDICTION_COLUMNS, "shadow_predictions": SHADOW_COLUMNS}
# A label for a row that got one meanwhile (another worker's call) is left as it is: the first stays.
INSERT_LABELS = text(
    "INSERT INTO labels (request_id, row_index, label, observed_at, received_at) "
    "VALUES (:request_id, :row_index, :label, :observed_at, :received_at) ON CONFLICT DO NOTHING"
)


@dataclass(frozen=True, slots=True)
class LabelItem:
    """One label: keyed by (request_id, row), or by a pass-through id (`passthrough_id`)."""

    label: int
    request_id: str | None = None
    row: int | None = None
    passthrough_id: str | None = None
    observed_at: float | None = None


@dataclass(frozen=True)
class ShadowFrame:
    """Shadow-scored rows as arrays: when, both versions, phats and business outcomes (the shadow's phat
    NaN and outcome -1 where it refused the row), and the label (NaN where none came back)."""

    scored_at: np.ndarray
    served_version: np.ndarray
    served_phat: np.ndarray
    served_outcome: np.ndarray
    shadow_version: np.ndarray
    shadow_phat: np.ndarray
    shadow_outcome: np.ndarray
    label: np.ndarray

    def __len__(self) -> int:
        return int(self.scored_at.shape[0])

    @classmethod
    def of(cls, rows: Sequence[Any]) -> ShadowFrame:
        """From rows of (scored_at, served_version, served_phat, served_outcome, shadow_version,
        shadow_phat, shadow_outcome, label)."""
        n = len(rows)
        c = list(zip(*rows, strict=True)) if n else [()] * 8

        def floats(values: Sequence[Any]) -> np.ndarray:
            return np.fromiter((np.nan if v is None else v for v in values), dtype=np.float64, count=n)

        def ints(values: Sequence[Any]) -> np.ndarray:
            return np.fromiter((-1 if v is None else v for v in values), dtype=np.int8, count=n)

        return cls(
            scored_at=floats(c[0]),
            served_version=np.array(c[1], dtype=object),
            served_phat=floats(c[2]),
            served_outcome=ints(c[3]),
            shadow_version=np.array(c[4], dtype=object),
            shadow_phat=floats(c[5]),
            shadow_outcome=ints(c[6]),
            label=floats(c[7]),
        )


@dataclass
class FeedbackCounts:
    matched: int = 0
    unmatched: int = 0
    duplicate: int = 0
    conflicting: int = 0
    # (item index, the label already stored) for each conflicting item, in order
    conflicts: list[tuple[int, int]] = field(default_factory=list)
    unmatched_items: list[int] = field(default_factory=list)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL: readers (GET /performance) never block the workers' writers; a busy writer waits, not fails.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    # 64 MiB of page cache (the default is 2 MiB): the indexes' pages stay in memory as the log grows
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.close()


class PredictionStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"

    @classmethod
    def open(cls, url: str, *, connect_timeout: float = 3.0) -> PredictionStore:
        """A store over `url` (nothing is connected until it is used)."""
        try:
            parsed = make_url(url)
        except Exception as exc:  # sqlalchemy's ArgumentError: not a URL
            raise PredictionLogUnavailable(f"the prediction log URL is not a database URL: {exc}") from None
        if parsed.get_backend_name() == "sqlite":
            if parsed.database:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(parsed, connect_args={"timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
        elif parsed.get_backend_name() == "postgresql":
            engine = create_engine(
                parsed,
                pool_pre_ping=True,
                pool_size=2,
                max_overflow=2,
                connect_args={"connect_timeout": max(1, math.ceil(connect_timeout))},
            )
        else:
            raise PredictionLogUnavailable(
                f"prediction log database {parsed.get_backend_name()!r}: use sqlite or postgresql"
            )
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    # --- schema -----------------------------------------------------------------------------------------
    def migrate(self) -> None:
        """Bring the schema to the newest revision; once, whichever of many workers gets here first."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self._migration_lock(), self.engine.begin() as conn:
            if self.postgres:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    @contextmanager
    def _migration_lock(self) -> Iterator[None]:
        database = self.engine.url.database
        if self.postgres or not database or database == ":memory:":
            yield
            return
        with open(f"{database}.migrate.lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # --- predictions ------------------------------------------------------------------------------------
    def has_batch(self, batch_id: str, table: str = "predictions") -> bool:
        _columns(table)
        with self.engine.connect() as conn:
            found = conn.execute(
                text(f"SELECT 1 FROM {table} WHERE batch_id = :b LIMIT 1"), {"b": batch_id}
            ).first()
        return found is not None

    def write(self, rows: Sequence[Row], *, replay: bool = False, table: str = "predictions") -> int:
        """Write one batch of rows (all of one batch_id) of `table` (predictions or shadow_predictions) in
        one transaction; returns the rows written (0 when `replay` and the batch is already in the log)."""
        columns = _columns(table)
        if not rows:
            return 0
        if replay and self.has_batch(rows[0][0], table):
            return 0
        if self.postgres:
            self._copy(rows, table, columns)
        else:
            self._insert(rows, table, columns)
        return len(rows)

    def _insert(self, rows: Sequence[Row], table: str, columns: Sequence[str]) -> None:
        """SQLite: multi-row INSERTs of up to SQLITE_ROWS rows each, in one transaction. One statement
        steps once for all its rows, so the writer thread takes the GIL back once per statement, not once
        per row (executemany's way), and the event loop it shares the interpreter with is not interrupted
        thousands of times a second."""
        names = ", ".join(columns)
        one = "(" + ", ".join("?" * len(columns)) + ")"
        with self.engine.begin() as conn:
            for start in range(0, len(rows), SQLITE_ROWS):
                chunk = rows[start : start + SQLITE_ROWS]
                values = ", ".join([one] * len(chunk))
                flat = [value for row in chunk for value in row]
                conn.exec_driver_sql(f"INSERT INTO {table} ({names}) VALUES {values}", tuple(flat))

    def _copy(self, rows: Sequence[Row], table: str, columns: Sequence[str]) -> None:
        raw = self.engine.raw_connection()
        try:
            pg = raw.driver_connection
            assert pg is not None
            sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
            with pg.cursor() as cursor, cursor.copy(sql) as copy:
                for row in rows:
                    copy.write_row(row)
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
        finally:
            raw.close()

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM predictions")).scalar_one())

    def frame(self, since: float, until: float | None = None, version: str | None = None) -> PredictionFrame:
        """Every logged row scored in [since, until), with its label where one came back (NaN where not)."""
        self.rematch()
        sql = (
            "SELECT p.scored_at, p.model_version, p.phat, p.outcome, l.label FROM predictions p "
            "LEFT JOIN labels l ON l.request_id = p.request_id AND l.row_index = p.row_index "
            "WHERE p.scored_at >= {since}"
        )
        return _frame(self._fetch(*_window(sql, "p", "model_version", since, until, version)))

    def _fetch(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """All rows of a query, as the driver's tuples: a million rows without SQLAlchemy's Row objects.
        `sql` names its parameters as {name}."""
        style = "%({})s" if self.postgres else ":{}"
        query = sql.format(**{name: style.format(name) for name in params})
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute(query, params)
            rows = list(cursor.fetchall())
            cursor.close()
            raw.rollback()  # a read: nothing to keep, and no transaction left open on a pooled connection
        finally:
            raw.close()
        return rows

    def shadow_frame(
        self, since: float, until: float | None = None, shadow_version: str | None = None
    ) -> ShadowFrame:
        """Every shadow-scored row of [since, until), both models' results, and its label where one came
        back (NaN where not; the shadow's phat is NaN where it refused the row)."""
        self.rematch()
        sql = (
            "SELECT s.scored_at, s.served_version, s.served_phat, s.served_outcome, s.shadow_version, "
            "s.shadow_phat, s.shadow_outcome, l.label "
            "FROM shadow_predictions s LEFT JOIN labels l "
            "ON l.request_id = s.request_id AND l.row_index = s.row_index WHERE s.scored_at >= {since}"
        )
        sql, params = _window(sql, "s", "shadow_version", since, until, shadow_version)
        return ShadowFrame.of(self._fetch(sql + " ORDER BY s.id", params))

    def labelled_frame(self, since: float, columns: Sequence[str]) -> Any:
        """Labelled rows scored since `since`: the raw values of `columns` as the client sent them, `y`,
        `scored_at` and `version` (a pandas DataFrame; pandas is imported only here)."""
        import pandas as pd

        self.rematch()
        sql = (
            "SELECT p.inputs, l.label, p.scored_at, p.model_version FROM predictions p "
            "JOIN labels l ON l.request_id = p.request_id AND l.row_index = p.row_index "
            "WHERE p.scored_at >= :since ORDER BY p.id"
        )
        with self.engine.connect() as conn:
            rows = conn.execute(text(sql), {"since": since}).all()
        records = []
        for inputs, label, scored_at, version in rows:
            values = orjson.loads(inputs)
            record = {c: values.get(c) for c in columns}
            record.update(y=int(label), scored_at=float(scored_at), version=version)
            records.append(record)
        return pd.DataFrame.from_records(records, columns=[*columns, "y", "scored_at", "version"])

    def prune(self, before: float) -> int:
        """Delete rows scored before `before` (shadow rows too), their labels, and unmatched labels received
        before it."""
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "DELETE FROM labels WHERE EXISTS (SELECT 1 FROM predictions p WHERE "
                    "p.request_id = labels.request_id AND p.row_index = labels.row_index "
                    "AND p.scored_at < :b)"
                ),
                {"b": before},
            )
            deleted = conn.execute(text("DELETE FROM predictions WHERE scored_at < :b"), {"b": before})
            conn.execute(text("DELETE FROM shadow_predictions WHERE scored_at < :b"), {"b": before})
            conn.execute(text("DELETE FROM unmatched_labels WHERE received_at < :b"), {"b": before})
        return int(deleted.rowcount or 0)

    # --- labels -----------------------------------------------------------------------------------------
    def apply_labels(self, items: Sequence[LabelItem], now: float | None = None) -> FeedbackCounts:
        """Store the labels whose prediction is logged; count duplicates (the same label again) and
        conflicts (another label for a labelled row: the first stays); keep the unmatched ones aside."""
        now = time.time() if now is None else now
        counts = FeedbackCounts()
        with self.engine.begin() as conn:
            keys = self._resolve(conn, items)
            stored = _stored_labels(conn, {k for k in keys if k is not None})
            new: list[dict[str, Any]] = []
            unmatched: list[dict[str, Any]] = []
            for i, (item, key) in enumerate(zip(items, keys, strict=True)):
                if key is None:
                    counts.unmatched += 1
                    counts.unmatched_items.append(i)
                    unmatched.append(_unmatched_row(item, now))
                    continue
                before = stored.get(key)
                if before is None:
                    stored[key] = item.label
                    counts.matched += 1
                    new.append(_label_row(key, item, now))
                elif before == item.label:
                    counts.duplicate += 1
                else:
                    counts.conflicting += 1
                    counts.conflicts.append((i, before))
            if new:
                conn.execute(INSERT_LABELS, new)
            if unmatched:
                conn.execute(
                    text(
                        "INSERT INTO unmatched_labels (request_id, row_index, passthrough_id, label, "
                        "observed_at, received_at) VALUES (:request_id, :row_index, :passthrough_id, "
                        ":label, :observed_at, :received_at)"
                    ),
                    unmatched,
                )
        return counts

    def _resolve(self, conn: Any, items: Sequence[LabelItem]) -> list[tuple[str, int] | None]:
        """Each item's (request_id, row) in the log, or None."""
        wanted = {(i.request_id, i.row) for i in items if i.request_id is not None and i.row is not None}
        logged = _logged_keys(conn, {rid for rid, _ in wanted})
        ids = {i.passthrough_id for i in items if i.request_id is None and i.passthrough_id is not None}
        by_id = _predictions_by_id(conn, ids)
        keys: list[tuple[str, int] | None] = []
        for item in items:
            if item.request_id is not None and item.row is not None:
                key = (item.request_id, item.row)
                keys.append(key if key in logged else None)
            elif item.passthrough_id is not None:
                keys.append(_latest(by_id.get(item.passthrough_id, ()), item.observed_at))
            else:
                keys.append(None)
        return keys

    def rematch(self) -> int:
        """Move unmatched labels whose prediction has since been logged into `labels`; returns how many."""
        with self.engine.begin() as conn:
            rows = conn.execute(
                text(
                    "SELECT id, request_id, row_index, passthrough_id, label, observed_at, received_at "
                    "FROM unmatched_labels"
                )
            ).all()
            if not rows:
                return 0
            items = [LabelItem(r[4], r[1], r[2], r[3], r[5]) for r in rows]
            keys = self._resolve(conn, items)
            stored = _stored_labels(conn, {k for k in keys if k is not None})
            moved: list[int] = []
            new: list[dict[str, Any]] = []
            for row, item, key in zip(rows, items, keys, strict=True):
                if key is None:
                    continue
                moved.append(row[0])
                if key not in stored:
                    stored[key] = item.label
                    new.append(_label_row(key, item, row[6]))
            if new:
                conn.execute(INSERT_LABELS, new)
            for start in range(0, len(moved), CHUNK):
                chunk = moved[start : start + CHUNK]
                marks = ", ".join(f":m{j}" for j in range(len(chunk)))
                conn.execute(
                    text(f"DELETE FROM unmatched_labels WHERE id IN ({marks})"),
                    {f"m{j}": v for j, v in enumerate(chunk)},
                )
        return len(moved)

    def unmatched_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM unmatched_labels")).scalar_one())


def _window(
    sql: str, alias: str, version_column: str, since: float, until: float | None, version: str | None
) -> tuple[str, dict[str, Any]]:
    """`sql` (ending in its `{since}` condition on `alias`.scored_at) narrowed to before `until` and to
    one `version`, with its parameters (for `_fetch`)."""
    params: dict[str, Any] = {"since": since}
    if until is not None:
        sql += f" AND {alias}.scored_at < {{until}}"
        params["until"] = until
    if version is not None:
        sql += f" AND {alias}.{version_column} = {{version}}"
        params["version"] = version
    return sql, params


def _columns(table: str) -> Sequence[str]:
    """The columns written to `table`; a table not in the log is a bug, never SQL text from outside."""
    if table not in TABLE_COLUMNS:
        raise ValueError(f"not a prediction log table: {table!r}")
    return TABLE_COLUMNS[table]


def _in_chunks(conn: Any, sql: str, values: set[Any]) -> Iterator[Any]:
    """Rows of `sql` (with `{marks}` where the IN list goes) over `values`, CHUNK at a time."""
    ordered = sorted(values)
    for start in range(0, len(ordered), CHUNK):
        chunk = ordered[start : start + CHUNK]
        marks = ", ".join(f":v{j}" for j in range(len(chunk)))
        yield from conn.execute(text(sql.format(marks=marks)), {f"v{j}": v for j, v in enumerate(chunk)})


def _logged_keys(conn: Any, request_ids: set[str]) -> set[tuple[str, int]]:
    sql = "SELECT DISTINCT request_id, row_index FROM predictions WHERE request_id IN ({marks})"
    return {(r[0], r[1]) for r in _in_chunks(conn, sql, request_ids)}


def _stored_labels(conn: Any, keys: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
    sql = "SELECT request_id, row_index, label FROM labels WHERE request_id IN ({marks})"
    rows = _in_chunks(conn, sql, {k[0] for k in keys})
    return {(r[0], r[1]): int(r[2]) for r in rows if (r[0], r[1]) in keys}


def _predictions_by_id(conn: Any, ids: set[str]) -> dict[str, list[tuple[float, str, int]]]:
    sql = (
        "SELECT passthrough_id, scored_at, request_id, row_index FROM predictions "
        "WHERE passthrough_id IN ({marks})"
    )
    found: dict[str, list[tuple[float, str, int]]] = {}
    for r in _in_chunks(conn, sql, ids):
        found.setdefault(r[0], []).append((float(r[1]), r[2], int(r[3])))
    return found


def _latest(scorings: Sequence[tuple[float, str, int]], observed_at: float | None) -> tuple[str, int] | None:
    """The latest scoring of an id at or before the label was observed (any, when it does not say)."""
    eligible = [s for s in scorings if observed_at is None or s[0] <= observed_at]
    if not eligible:
        return None
    _, request_id, row = max(eligible)
    return request_id, row


def _label_row(key: tuple[str, int], item: LabelItem, now: float) -> dict[str, Any]:
    return {
        "request_id": key[0],
        "row_index": key[1],
        "label": item.label,
        "observed_at": item.observed_at,
        "received_at": now,
    }


def _unmatched_row(item: LabelItem, now: float) -> dict[str, Any]:
    return {
        "request_id": item.request_id,
        "row_index": item.row,
        "passthrough_id": item.passthrough_id,
        "label": item.label,
        "observed_at": item.observed_at,
        "received_at": now,
    }


def _frame(rows: Sequence[Any]) -> PredictionFrame:
    n = len(rows)
    if n == 0:
        empty = np.empty(0)
        return PredictionFrame(empty, np.empty(0, dtype=object), empty, np.empty(0, dtype=np.int8), empty)
    scored_at, versions, phat, outcome, label = zip(*rows, strict=True)
    return PredictionFrame(
        scored_at=np.fromiter(scored_at, dtype=np.float64, count=n),
        version=np.array(versions, dtype=object),
        phat=np.fromiter(phat, dtype=np.float64, count=n),
        outcome=np.fromiter(outcome, dtype=np.int8, count=n),
        label=np.fromiter((np.nan if v is None else v for v in label), dtype=np.float64, count=n),
    )
