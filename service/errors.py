"""One error hierarchy for the whole service.

Every error a user can cause carries an HTTP status, a stable `kind` (used in metrics and problem+json
`type`), a human title and optional structured details. The API turns them into RFC 9457 bodies; the CLI
turns them into a message and a non-zero exit code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of one row (row is None for a problem with the whole body)."""

    row: int | None
    field: str | None
    reason: str
    value: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"row": self.row, "field": self.field, "reason": self.reason}
        if self.value is not None:
            out["value"] = self.value
        return out


class PropensityError(Exception):
    """Base of every error this service raises on purpose."""

    status: int = 500
    kind: str = "internal"
    title: str = "Internal error"

    def __init__(self, detail: str, *, errors: list[FieldError] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.extra = extra


# --- client input (4xx) -------------------------------------------------------------------------------------
class InputError(PropensityError):
    status = 422
    kind = "invalid-rows"
    title = "Rows cannot be scored"


class MalformedJSON(InputError):
    status = 400
    kind = "malformed-json"
    title = "Malformed JSON"


class BadBodyShape(InputError):
    status = 422
    kind = "bad-body-shape"
    title = "Body must be a JSON object or an array of objects"


class UnsupportedMediaType(InputError):
    status = 415
    kind = "unsupported-media-type"
    title = "Unsupported media type"


class PayloadTooLarge(InputError):
    status = 413
    kind = "payload-too-large"
    title = "Payload too large"


# --- data / training ----------------------------------------------------------------------------------------
class DataValidationError(PropensityError, ValueError):
    """Training or evaluation data that cannot be used; names the column and the first offending rows."""

    status = 422
    kind = "invalid-training-data"
    title = "Invalid training data"


# --- artifacts and registry ---------------------------------------------------------------------------------
class ArtifactError(PropensityError):
    status = 500
    kind = "artifact"
    title = "Artifact error"


class ArtifactIntegrityError(ArtifactError):
    kind = "artifact-integrity"
    title = "Artifact failed its integrity check"


class ArtifactNotFound(ArtifactError):
    status = 404
    kind = "artifact-not-found"
    title = "No such model version or alias"


class SelfCheckFailed(ArtifactError):
    kind = "self-check-failed"
    title = "Model failed its golden-row self-check"


class ModelNotReady(PropensityError):
    status = 503
    kind = "not-ready"
    title = "Model not loaded yet"


@dataclass
class ErrorCollector:
    """Collects field errors up to a cap, remembering how many there were in total."""

    cap: int
    errors: list[FieldError] = field(default_factory=list)
    total: int = 0

    def add(self, error: FieldError) -> None:
        self.total += 1
        if len(self.errors) < self.cap:
            self.errors.append(error)

    def __bool__(self) -> bool:
        return self.total > 0
