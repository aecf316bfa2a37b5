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
    """Base of every error this service raises on purpose.

    `public`: the detail may reach an HTTP client. Server-side errors (artifacts, the registry) name paths
    and hashes, so the API logs their detail and answers with a generic one. `close_connection`: the
    answer ends the connection (the rest of the request cannot be trusted to arrive).
    """

    status: int = 500
    kind: str = "internal"
    title: str = "Internal error"
    public: bool = False
    close_connection: bool = False

    def __init__(
        self,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        """`headers`: HTTP headers the answer carries (e.g. Accept-Encoding on a 415 for a coding)."""
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}
        self.extra = extra


# --- client input (4xx) -------------------------------------------------------------------------------------
class InputError(PropensityError):
    status = 422
    kind = "invalid-rows"
    title = "Rows cannot be scored"
    public = True


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


class UnsupportedContentEncoding(UnsupportedMediaType):
    kind = "unsupported-content-encoding"
    title = "Unsupported content encoding"


class UndecodableBody(InputError):
    """A compressed body that does not decompress (corrupt, cut short, or not the coding it declared)."""

    status = 400
    kind = "undecodable-body"
    title = "Body does not decode as its Content-Encoding"


class NotAcceptable(InputError):
    """No answer format the client accepts (Accept)."""

    status = 406
    kind = "not-acceptable"
    title = "Not acceptable"


class PayloadTooLarge(InputError):
    status = 413
    kind = "payload-too-large"
    title = "Payload too large"


class BodyReadTimeout(InputError):
    """The body stopped arriving (a slow or stalled client): the worker gives its budget back and closes."""

    status = 408
    kind = "body-timeout"
    title = "Request body timeout"
    close_connection = True


# --- data / training ----------------------------------------------------------------------------------------
class InvalidLabels(InputError):
    """POST /feedback items that cannot be stored: each named by its index (`row`), field and reason."""

    kind = "invalid-labels"
    title = "Labels cannot be stored"


class DataValidationError(PropensityError, ValueError):
    """Training or evaluation data that cannot be used; names the column and the first offending rows."""

    status = 422
    kind = "invalid-training-data"
    title = "Invalid training data"
    public = True


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


class DuplicateVersion(ArtifactError):
    """A version trained on the same data with the same recipe and code exists: it is reused, not copied."""

    status = 409
    kind = "duplicate-version"
    title = "An identical version exists"

    def __init__(self, detail: str, version: str) -> None:
        super().__init__(detail)
        self.version = version


class RegistryUnavailable(ArtifactError):
    """The registry's server (MLflow) cannot be reached or answered with an error of its own: a failure
    that may pass, unlike a refused version."""

    status = 503
    kind = "registry-unavailable"
    title = "The model registry cannot be reached"


class SelfCheckFailed(ArtifactError):
    kind = "self-check-failed"
    title = "Model failed its golden-row self-check"


class ModelNotReady(PropensityError):
    """No model yet, for a reason that passes on its own (still loading, the registry unreadable for a
    moment): 503 with Retry-After."""

    status = 503
    kind = "not-ready"
    title = "Model not loaded yet"
    public = True


class ModelRefused(PropensityError):
    """The version to serve failed its checks (sha256, loading, golden rows) and nothing else is served:
    retrying does not help until an operator publishes (or restores) a good version. 503, no Retry-After."""

    status = 503
    kind = "model-refused"
    title = "Model version refused"
    public = True


class Overloaded(PropensityError):
    """Load shedding: admitting the request would exceed the worker's in-flight budget. 503 with
    Retry-After, answered before the body is read."""

    status = 503
    kind = "overloaded"
    title = "Worker at capacity"
    public = True


class PredictionLogUnavailable(PropensityError):
    """The prediction log's database cannot be reached or read (GET /performance, POST /feedback): 503
    with Retry-After. Scoring never raises it: rows wait in the spool instead."""

    status = 503
    kind = "prediction-log-unavailable"
    title = "Prediction log unavailable"
    public = True


class PredictionLogOff(PropensityError):
    """The prediction log is switched off (PROPENSITY_PREDICTION_LOG_ENABLED=false): nothing to join to."""

    status = 404
    kind = "prediction-log-off"
    title = "Prediction log is off"
    public = True


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
