"""All configuration in one validated class, read from PROPENSITY_* environment variables."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# A model name is one directory of the registry: no separators, no "." or "..", nothing hidden.
MODEL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Fields a client sends with a row to get back with its result (never read by the model): the ids that
# match answers to customers, and that label feedback keys on.
DEFAULT_PASSTHROUGH_FIELDS = ("customer_id",)
PASSTHROUGH_MAX_CHARS = 128
RESULT_KEYS = frozenset({"business_outcome", "phat", "reasons", "errors", "row"})
PASSTHROUGH_FIELD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


def check_model_name(name: str) -> str:
    """`name` if it is a model name, else ValueError saying what one is."""
    if not MODEL_NAME_RE.fullmatch(name):
        raise ValueError(
            "a model name is 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit "
            "(one directory of the registry)"
        )
    return name


class UnseenCategoryPolicy(StrEnum):
    MISSING = "missing"  # score an unseen level as a missing value; count it (header + metric)
    REJECT = "reject"  # 422 naming the row, field and the allowed levels


class BatchErrorPolicy(StrEnum):
    REJECT = "reject"  # any bad row -> 422 for the whole call, naming every bad row
    SCORE_VALID = "score-valid"  # score good rows; bad rows come back as null results plus an error list


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROPENSITY_", extra="ignore", frozen=True)

    # registry
    artifacts_dir: Path = Field(Path("artifacts"), description="Registry root: <dir>/<model>/<version>/")
    model_name: str = Field("propensity", description="Model name in the registry")
    model_alias: str = Field("production", description="Alias the server follows")
    model_version: str | None = Field(None, description="Pin a version instead of following the alias")
    startup_wait_seconds: float = Field(
        60.0, ge=0, description="A worker waits this long for its first model load before accepting"
    )
    reload_interval_seconds: float = Field(2.0, ge=0, description="How often workers check the alias; 0=off")
    reload_backoff_max_seconds: float = Field(
        10.0,
        gt=0,
        description="A failed model refresh (unreadable registry, a version that fails its checks) is "
        "retried after the check interval, doubling up to this",
    )

    # server
    host: str = Field("127.0.0.1", description="Bind address (0.0.0.0 in the Docker image)")
    port: int = Field(1313, ge=1, le=65535, description="Listen port")
    workers: int = Field(2, ge=1, le=64, description="gunicorn (uvicorn) worker processes")
    log_level: str = Field("info", description="debug, info, warning, error")
    slow_request_seconds: float = Field(1.0, gt=0, description="log the request id of slower requests")
    access_log: bool = Field(False, description="log every request's id (errors and slow ones always are)")
    metrics_flush_seconds: float = Field(
        0.25, gt=0, le=10, description="write a worker's request-path metric updates at least this often"
    )
    # Several replicas on one host network (the single-host Swarm stack): each task listens on
    # slot_port_base + task_slot (task_slot from Swarm's {{.Task.Slot}}) instead of `port`, and
    # reuse_port (SO_REUSEPORT) lets a task's replacement bind that port while the old task still drains.
    task_slot: int | None = Field(None, ge=1, description="this replica's Swarm task slot (1, 2, ...)")
    slot_port_base: int | None = Field(None, ge=1, le=65535, description="listen on this + task_slot")
    reuse_port: bool = Field(False, description="SO_REUSEPORT on the listening socket")
    preload: bool = Field(
        False,
        description="Import the app in the gunicorn master before listening: the workers fork ready, so a "
        "new server answers about a second after it binds instead of after every worker's imports",
    )

    # request contract
    max_rows: int = Field(10_000, ge=1, description="Rows per /predict call; more -> 413")
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Body size limit; more -> 413")
    max_errors_listed: int = Field(100, ge=1, description="Field errors listed in one 422 (all are counted)")
    passthrough_fields: tuple[str, ...] = Field(
        DEFAULT_PASSTHROUGH_FIELDS,
        description='Row fields echoed unchanged in each result, never scored (JSON list: ["customer_id"])',
    )
    passthrough_max_chars: int = Field(
        PASSTHROUGH_MAX_CHARS,
        ge=1,
        le=4096,
        description="A pass-through id longer than this (as text) -> 422 for its row",
    )
    body_read_timeout_seconds: float = Field(
        15.0, gt=0, description="A body that sends no bytes for this long -> 408 and the connection closes"
    )
    header_read_timeout_seconds: float = Field(
        10.0, gt=0, description="Request headers not complete this long after they began -> connection closed"
    )

    # load shedding, per worker (service/serving/admission.py)
    max_inflight_rows: int = Field(
        20_000, ge=1, description="Rows a worker holds decoded at once; a call that would exceed it -> 503"
    )
    max_inflight_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Body bytes a worker holds at once (from Content-Length, before reading); more -> 503",
    )
    unseen_category_policy: UnseenCategoryPolicy = Field(
        UnseenCategoryPolicy.MISSING, description="missing: score as missing and count; reject: 422"
    )
    batch_error_policy: BatchErrorPolicy = Field(
        BatchErrorPolicy.REJECT, description="reject: any bad row -> 422; score-valid: score the rest"
    )

    # MLflow's Model Registry as the registry (service/model/mlflow_registry.py); unset: the directory
    mlflow_tracking_uri: str | None = Field(
        None, description="http(s)://host:5000 of an MLflow tracking server; unset = the directory registry"
    )
    mlflow_timeout_seconds: float = Field(10.0, gt=0, description="Timeout of one MLflow REST call")

    actor: str | None = Field(
        None, description="Who the audit log names for this process's promotions; unset = the login name"
    )

    # signed versions (service/model/signing.py): Ed25519 key files, e.g. Swarm secrets
    signing_key_file: Path | None = Field(
        None, description="Private key (PEM) that signs every version this process publishes"
    )
    verify_key_file: Path | None = Field(
        None, description="Public key (PEM); when set, serving refuses a version it did not sign"
    )

    # response cache
    redis_url: str | None = Field(None, description="redis://host:port/db; unset = in-process LRU")
    redis_password_file: Path | None = Field(
        None, description="File holding the Redis password (a Swarm secret); or put it in the URL"
    )
    cache_secret: SecretStr | None = Field(
        None, description="Key of the tags that sign cached values (16+ characters); Redis needs one"
    )
    cache_secret_file: Path | None = Field(None, description="File holding cache_secret (a Swarm secret)")
    cache_enabled: bool = Field(True, description="Response cache on/off")
    cache_min_body_bytes: int = Field(
        64 * 1024,
        ge=0,
        description="Only bodies at least this large (~25 rows) are cached: below, a Redis round trip and "
        "the key hashing cost about what scoring saves (the README's cache section has the measurements)",
    )
    cache_ttl_seconds: int = Field(3600, ge=1, description="Redis TTL of a cached response")
    cache_max_value_bytes: int = Field(16 * 1024 * 1024, ge=1, description="Larger responses are not cached")
    cache_lru_max_bytes: int = Field(256 * 1024 * 1024, ge=0, description="In-process LRU size per worker")
    redis_timeout_seconds: float = Field(0.05, gt=0, le=5, description="Redis socket timeout (fail-open)")
    redis_breaker_failures: int = Field(3, ge=1, description="Consecutive failures that open the breaker")
    redis_breaker_reset_seconds: float = Field(5.0, gt=0, description="Open breaker skips Redis this long")

    # nginx in front of the replicas (the local cluster, `make up`)
    rate_limit_per_second: float = Field(
        0, ge=0, description="nginx limit_req on /predict per client address; 0 = off (the default)"
    )
    rate_limit_burst: int = Field(50, ge=0, description="requests allowed above the rate before 429s")

    # drift monitoring (per worker: a rolling window of bucket counts; see service/monitoring/drift.py)
    drift_enabled: bool = Field(True, description="Drift monitoring of scored rows")
    drift_window_rows: int = Field(50_000, ge=100, description="Rows the rolling window keeps (about)")
    drift_chunk_rows: int = Field(5_000, ge=10, description="A window chunk closes at this many rows ...")
    drift_chunk_seconds: float = Field(60.0, gt=0, description="... or when it is this old")
    drift_max_chunks: int = Field(60, ge=1, description="Chunks kept in the window (bounds its time span)")
    drift_min_rows: int = Field(1_000, ge=1, description="Rows a window needs before drift is reported")
    drift_publish_seconds: float = Field(5.0, gt=0, description="How often a worker refreshes its gauges")
    drift_psi_warn: float = Field(0.1, gt=0, description="PSI that warns")
    drift_psi_alert: float = Field(0.2, gt=0, description="PSI that alerts")
    drift_js_warn: float = Field(0.13, gt=0, description="JS distance (base 2); ≈ PSI 0.1 for small shifts")
    drift_js_alert: float = Field(0.19, gt=0, description="JS distance (base 2); ≈ PSI 0.2 for small shifts")
    drift_missing_warn: float = Field(0.02, gt=0, description="|missing rate - reference| that warns")
    drift_missing_alert: float = Field(0.05, gt=0, description="|missing rate - reference| that alerts")
    drift_unseen_warn: float = Field(0.001, gt=0, description="share of rows with an unseen level that warns")
    drift_unseen_alert: float = Field(
        0.01, gt=0, description="share of rows with an unseen level that alerts"
    )
    drift_spool_dir: Path | None = Field(
        None, description="Workers append closed window chunks here (for `drift-report --since`); unset = off"
    )
    drift_spool_retention_hours: float = Field(
        168.0, gt=0, description="Spool files older than this are deleted"
    )

    # the prediction log and label feedback (service/monitoring/prediction_log.py, docs/monitoring.md)
    prediction_log_enabled: bool = Field(True, description="Record every scored row (off the request path)")
    prediction_log_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the log (postgresql+psycopg://... in a cluster); "
        "unset = SQLite at <artifacts_dir>/prediction-log.sqlite",
    )
    prediction_log_cache_hits: bool = Field(
        True,
        description="Log the rows of answers from the response cache too (the log's thread scores them "
        "again: the cache then saves their latency, not their CPU)",
    )
    prediction_log_sample_rate: float = Field(
        1.0, gt=0, le=1, description="Share of requests whose rows are logged (whole requests, at random)"
    )
    prediction_log_flush_seconds: float = Field(
        1.0, gt=0, le=60, description="A worker writes its pending rows at least this often (the loss window)"
    )
    prediction_log_max_pending_rows: int = Field(
        200_000, ge=10_000, description="Rows a worker holds unwritten; beyond, rows are dropped and counted"
    )
    prediction_log_spool_dir: Path | None = Field(
        None,
        description="Rows the database could not take wait here to be replayed; "
        "unset = <artifacts_dir>/prediction-spool",
    )
    prediction_log_retry_seconds: float = Field(
        5.0, gt=0, description="While the database is unreachable, try it again this often"
    )
    prediction_log_retention_days: float = Field(
        90.0, gt=0, description="Logged rows (and their labels) older than this are deleted"
    )
    performance_min_labels: int = Field(
        100, ge=1, description="Labels a cohort needs before its estimate-vs-realized gap can alarm"
    )
    performance_refresh_seconds: float = Field(
        300.0,
        gt=0,
        description="How often a replica recomputes its performance gauges (one worker per replica does)",
    )

    # shadow scoring (service/monitoring/shadow.py, docs/operations.md "Shadow scoring")
    shadow_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of live requests whose rows the shadow model also scores, off the response "
        "path; 0 = off",
    )
    shadow_alias: str = Field("staging", description="Alias of the model shadow scoring compares")
    shadow_max_pending_rows: int = Field(
        100_000, ge=1, description="Rows a worker holds for the shadow thread; beyond, rows are skipped"
    )
    prometheus_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="Prometheus that `registry promote` reads the shadow agreement from; unset: not read",
    )

    # canary (service/serving/canary.py, docs/operations.md "Canary")
    canary_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of calls answered by the canary model, chosen by a stable hash of the first "
        "row's pass-through id (else the request id); 0 = off",
    )
    canary_alias: str = Field("staging", description="Alias of the model a canary share is routed to")
    canary_min_calls: int = Field(
        20, ge=1, description="Canary calls a worker counts before it may judge the canary's error rate"
    )
    canary_max_error_rate: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Share of a worker's recent canary calls that may fail (each answered by production "
        "instead) before the canary is rolled back",
    )
    canary_max_latency_ratio: float = Field(
        2.0,
        gt=1,
        description="Rollback when the canary's p95 call time exceeds production's by this factor (each "
        "over a worker's last canary_window_calls calls)",
    )
    canary_min_latency_regression_seconds: float = Field(
        0.002,
        ge=0,
        description="A canary is too slow only when its p95 call time also exceeds production's by this "
        "much (sub-millisecond times are noise)",
    )
    canary_window_calls: int = Field(
        200, ge=10, description="Recent calls per version a worker judges the canary on"
    )

    # gated retraining (service/model/retrain.py)
    retrain_auto_promote: bool = Field(
        False,
        description="Promote a challenger that passes the gate by itself (a policy, off by default: a "
        "passing challenger is staged for a person to promote)",
    )
    retrain_promote_cutoff: Literal["keep", "take"] = Field(
        "keep",
        description="With auto-promotion: keep the cutoff production serves, or take the challenger's own",
    )
    retrain_max_auc_drop: float = Field(0.005, ge=0, description="Challenger AUC may trail by at most this")
    retrain_min_auc: float = Field(
        0.7, ge=0, le=1, description="Holdout AUC floor (catches labels corrupted in the holdout too)"
    )
    retrain_max_log_loss_increase: float = Field(0.005, ge=0, description="Gate: log-loss increase allowed")
    retrain_max_brier_increase: float = Field(0.002, ge=0, description="Gate: Brier increase allowed")
    retrain_max_flip_share: float = Field(1.0, ge=0, le=1, description="Share of flipped outcomes; 1 = off")
    retrain_min_rows: int = Field(5_000, ge=200, description="Fewer rows fail validation")
    retrain_min_class_share: float = Field(0.05, ge=0, lt=0.5, description="Minority class share at least")
    retrain_max_missing_share: float = Field(0.5, gt=0, le=1, description="Per model column, at most")
    retrain_bootstrap: int = Field(1_000, ge=0, description="Bootstrap resamples for the AUC intervals")
    retrain_data_dir: Path | None = Field(None, description="Where the scheduler looks for the newest CSV")
    retrain_every_seconds: float = Field(86_400.0, gt=0, description="Scheduler cadence")
    retrain_calibration_min_slope: float = Field(
        0.8, gt=0, le=1, description="Gate: holdout calibration slope at least (1 = calibrated)"
    )
    retrain_calibration_max_slope: float = Field(
        1.25, ge=1, description="Gate: holdout calibration slope at most (1 = calibrated)"
    )
    retrain_calibration_max_intercept: float = Field(
        0.2, gt=0, description="Gate: |calibration intercept| (log odds, slope held at 1) at most"
    )

    @field_validator("model_name")
    @classmethod
    def _model_name(cls, value: str) -> str:
        return check_model_name(value)

    @field_validator("passthrough_fields")
    @classmethod
    def _passthrough(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not PASSTHROUGH_FIELD_RE.fullmatch(name):
                raise ValueError(f"pass-through field {name!r}: 1 to 64 letters, digits, '_', '.' or '-'")
        if len(set(value)) != len(value):
            raise ValueError("pass-through fields repeat a name")
        taken = sorted(set(value) & RESULT_KEYS)
        if taken:
            raise ValueError(f"pass-through field(s) {', '.join(taken)} would overwrite a result key")
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        # One request of the largest allowed size always fits on an idle worker.
        if self.max_inflight_rows < self.max_rows:
            raise ValueError("max_inflight_rows must be at least max_rows")
        if self.max_inflight_bytes < self.max_body_bytes:
            raise ValueError("max_inflight_bytes must be at least max_body_bytes")
        if self.model_version is not None and not self.model_version.startswith("v"):
            raise ValueError("model_version pins a version like 'v3'; use model_alias for an alias")
        for name in ("psi", "js", "missing", "unseen"):
            if getattr(self, f"drift_{name}_warn") > getattr(self, f"drift_{name}_alert"):
                raise ValueError(f"drift_{name}_warn must not exceed drift_{name}_alert")
        if self.slot_port_base is not None:
            if self.task_slot is None:
                raise ValueError("slot_port_base needs task_slot (PROPENSITY_TASK_SLOT={{.Task.Slot}})")
            if self.slot_port_base + self.task_slot > 65535:
                raise ValueError("slot_port_base + task_slot is not a port")
        return self

    @property
    def prediction_log_database(self) -> str:
        """The prediction log's SQLAlchemy URL: `prediction_log_url`, else SQLite in the registry's root."""
        if self.prediction_log_url:
            return self.prediction_log_url
        return f"sqlite:///{(self.artifacts_dir / 'prediction-log.sqlite').absolute()}"

    @property
    def prediction_log_spool(self) -> Path:
        if self.prediction_log_spool_dir is not None:
            return self.prediction_log_spool_dir
        return self.artifacts_dir / "prediction-spool"

    @property
    def listen_port(self) -> int:
        """The port to bind: slot_port_base + task_slot when a slot port base is set, else `port`."""
        if self.slot_port_base is not None and self.task_slot is not None:
            return self.slot_port_base + self.task_slot
        return self.port
