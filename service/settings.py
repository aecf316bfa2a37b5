"""All configuration in one validated class, read from PROPENSITY_* environment variables."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    model_name: str = Field("propensity", pattern=r"^[A-Za-z0-9_.-]+$")
    model_alias: str = Field("production", description="Alias the server follows")
    model_version: str | None = Field(None, description="Pin a version instead of following the alias")
    reload_interval_seconds: float = Field(2.0, ge=0, description="How often workers check the alias; 0=off")

    # server
    host: str = "127.0.0.1"
    port: int = Field(1313, ge=1, le=65535)
    workers: int = Field(2, ge=1, le=64)
    log_level: str = "info"

    # request contract
    max_rows: int = Field(10_000, ge=1)
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    max_errors_listed: int = Field(100, ge=1)
    unseen_category_policy: UnseenCategoryPolicy = UnseenCategoryPolicy.MISSING
    batch_error_policy: BatchErrorPolicy = BatchErrorPolicy.REJECT

    # response cache
    redis_url: str | None = Field(None, description="redis://host:port/db; unset = in-process LRU")
    cache_enabled: bool = True
    cache_min_body_bytes: int = Field(
        32 * 1024, ge=0, description="Only bodies at least this large are cached"
    )
    cache_ttl_seconds: int = Field(3600, ge=1)
    cache_max_value_bytes: int = Field(16 * 1024 * 1024, ge=1)
    cache_lru_max_bytes: int = Field(256 * 1024 * 1024, ge=0)
    redis_timeout_seconds: float = Field(0.05, gt=0, le=5)
    redis_breaker_failures: int = Field(3, ge=1, description="Consecutive failures that open the breaker")
    redis_breaker_reset_seconds: float = Field(5.0, gt=0)

    # nginx in front of the replicas (the local cluster, `make up`)
    rate_limit_per_second: float = Field(
        0, ge=0, description="nginx limit_req on /predict per client address; 0 = off (the default)"
    )
    rate_limit_burst: int = Field(50, ge=0, description="requests allowed above the rate before 429s")

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.model_version is not None and not self.model_version.startswith("v"):
            raise ValueError("model_version pins a version like 'v3'; use model_alias for an alias")
        return self

    @property
    def model_dir(self) -> Path:
        return self.artifacts_dir / self.model_name
