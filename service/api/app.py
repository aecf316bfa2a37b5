"""The FastAPI app factory. Nothing heavy happens at import; the model loads in the lifespan."""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api import openapi_docs
from service.api.body import BodyReads
from service.api.feedback_routes import router as feedback_router
from service.api.mlflow_routes import mlflow_router
from service.api.operation_ids import operation_id
from service.api.problems import problem_body, problem_response
from service.api.routes import router
from service.api.state import AppState
from service.api.v2_routes import router as v2_router
from service.errors import Overloaded, PropensityError
from service.model.registries import ModelRegistry
from service.monitoring.drift_monitor import DriftMonitor
from service.monitoring.feedback import Feedback
from service.monitoring.performance_gauges import PerformanceGauges
from service.monitoring.prediction_log import PredictionLog
from service.monitoring.shadow import ShadowScorer
from service.serving.cache import LRUCache, ResponseCache
from service.serving.canary import CanaryRouter
from service.serving.holder import ChallengerHolder, ModelHolder
from service.serving.json_rows import JsonRows
from service.serving.metric_buffer import MetricBuffer
from service.serving.metrics import Metrics
from service.serving.observe import ScoringMetrics, ScoringObserver
from service.serving.pipeline import ScoringPipeline
from service.serving.turns import SmallCallsFirst
from service.settings import Settings

log = logging.getLogger("propensity.api")
ROUTES = {
    "/predict",
    "/health/live",
    "/health/ready",
    "/model",
    "/metrics",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/invocations",
    "/ping",
    "/health",
    "/version",
    # the Open Inference Protocol, for the default model name (other names and versioned paths: "other")
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/propensity",
    "/v2/models/propensity/ready",
    "/v2/models/propensity/infer",
}


class ObservabilityMiddleware:
    """Pure ASGI: request id, in-flight gauge, requests by route/status, end-to-end latency; and the
    count of small calls in flight, which big calls in worker threads step aside for (SmallCallsFirst).

    One log line with the request id for every error and every slow request; for every request only
    with `access_log` (nginx's JSON access log already has each id, and a line per request is not free).
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        *,
        turns: SmallCallsFirst,
        small_below_bytes: int,
        slow_seconds: float = 1.0,
        access_log: bool = False,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.turns = turns
        self.small_below_bytes = small_below_bytes
        self.slow_seconds = slow_seconds
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        route = path if path in ROUTES else "other"
        request_id = ""
        small = True  # no body, or one the pipeline answers on the loop
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:128]
            elif name == b"content-length":
                small = value.isdigit() and int(value) < self.small_below_bytes
            elif name == b"transfer-encoding" or name == b"content-encoding":
                small = False  # chunked: of unknown size; compressed: of unknown size once decoded
        if not request_id:
            request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        rid = request_id.encode("latin-1")

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            await send(message)

        metrics = self.metrics
        buffer = metrics.buffer
        buffer.inc(metrics.in_flight, 1)
        turns = self.turns
        if small:
            turns.begin()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if small:
                turns.end()
            elapsed = time.perf_counter() - started
            buffer.inc(metrics.in_flight, -1)
            count, latency = metrics.request_children(route, scope["method"], status)
            buffer.inc(count)
            buffer.observe(latency, elapsed)
            buffer.flush_if_due()
            if status >= 400 or elapsed >= self.slow_seconds or self.access_log:
                log.info(
                    "request_id=%s %s %s -> %d in %.1f ms",
                    request_id,
                    scope["method"],
                    path,
                    status,
                    elapsed * 1e3,
                )


def _instance(request: Request) -> str:
    return str(request.url.path)


def install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    @app.exception_handler(PropensityError)
    async def on_propensity_error(request: Request, exc: PropensityError) -> Response:
        metrics.input_errors.labels(exc.kind).inc()
        request_id = request.scope.get("state", {}).get("request_id", "?")
        if exc.status >= 500 and not isinstance(exc, Overloaded):  # shedding is counted, not logged
            log.error("request_id=%s %s", request_id, exc.detail)
        if not exc.public:  # a server-side error names paths and hashes: the log keeps them, not the body
            body = problem_body(
                status=exc.status,
                kind=exc.kind,
                title=exc.title,
                detail=f"the server could not answer; request id {request_id}",
                instance=_instance(request),
            )
            return problem_response(body, path=_instance(request))
        extra = {k: v for k, v in exc.extra.items() if k not in ("retry_after", "error_count")}
        body = problem_body(
            status=exc.status,
            kind=exc.kind,
            title=exc.title,
            detail=exc.detail,
            instance=_instance(request),
            errors=exc.errors if exc.errors else None,
            error_count=exc.extra.get("error_count"),
            extra=extra,
        )
        headers = dict(exc.headers)
        if "retry_after" in exc.extra:
            headers["Retry-After"] = str(exc.extra["retry_after"])
        if exc.close_connection:
            headers["Connection"] = "close"
        return problem_response(body, headers=headers or None, path=_instance(request))

    @app.exception_handler(ClientDisconnect)
    async def on_client_gone(request: Request, exc: ClientDisconnect) -> Response:
        # Nobody reads this answer; 499 (nginx's "client closed request") counts it in the metrics
        # instead of a traceback in the log.
        return Response(status_code=499)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        body = problem_body(
            status=exc.status_code,
            kind=f"http-{exc.status_code}",
            title=str(exc.detail),
            detail=str(exc.detail),
            instance=_instance(request),
        )
        return problem_response(body, headers=getattr(exc, "headers", None), path=_instance(request))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        body = problem_body(
            status=422,
            kind="invalid-request",
            title="Invalid request",
            detail="the request does not match the API",
            instance=_instance(request),
        )
        return problem_response(body, path=_instance(request))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> Response:
        request_id = request.scope.get("state", {}).get("request_id", "?")
        log.exception("request_id=%s unexpected error", request_id)
        body = problem_body(
            status=500,
            kind="internal",
            title="Internal error",
            detail=f"an unexpected error occurred; request id {request_id}",
            instance=_instance(request),
        )
        return problem_response(body, path=_instance(request))


def new_request_id() -> str:
    """32 hex digits, time-ordered like a UUIDv7 (RFC 9562): milliseconds since the epoch, then 80 random
    bits. Ordered ids go into the prediction log's request index at its end, not at random places of a
    B-tree that outgrows the database's cache (what a uuid4 does to every insert)."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def build_cache(settings: Settings, metrics: Metrics) -> ResponseCache | None:
    if not settings.cache_enabled:
        return None
    if settings.redis_url:
        # the Redis client library is imported only where Redis is configured
        from service.serving.redis_cache import RedisCache

        return RedisCache(settings, metrics)
    return LRUCache(settings.cache_lru_max_bytes, settings.cache_max_value_bytes)


def build_state(
    settings: Settings,
    metrics: Metrics,
    registry: ModelRegistry | None,
    turns: SmallCallsFirst | None = None,
) -> AppState:
    """The services of one app: the model holder, the cache, the drift monitor and the pipeline over them."""
    holder = ModelHolder(settings, metrics, registry)

    def follower(alias: str, info: Any, role: str) -> ChallengerHolder:
        """A challenger's holder, reading the served model's registry."""
        return ChallengerHolder(settings, metrics, holder.registry, alias=alias, info=info, role=role)

    drift = DriftMonitor(settings, metrics) if settings.drift_enabled else None
    cache = build_cache(settings, metrics)
    observers: list[ScoringObserver] = [ScoringMetrics(metrics)]
    if drift is not None:
        observers.append(drift)
    prediction_log = feedback = gauges = None
    if settings.prediction_log_enabled:
        prediction_log = PredictionLog(settings, metrics)
        observers.append(prediction_log)
        feedback = Feedback(settings, metrics)
        gauges = PerformanceGauges(
            feedback,
            metrics,
            cutoff=lambda: None if holder.current is None else holder.current.cutoff,
            interval=settings.performance_refresh_seconds,
            min_labels=settings.performance_min_labels,
        )
    shadow = None
    if settings.shadow_share > 0:
        staged = follower(settings.shadow_alias, metrics.shadow_model_info, "shadow-scoring with")
        shadow = ShadowScorer(settings, metrics, staged, log=prediction_log)
        observers.append(shadow)
    canary = None
    if settings.canary_share > 0:
        canary_model = follower(settings.canary_alias, metrics.canary_model_info, "canary")
        canary = CanaryRouter(settings, metrics, canary_model, holder.registry)
    codec = JsonRows(max_rows=settings.max_rows, max_errors=settings.max_errors_listed)
    pipeline = ScoringPipeline(
        settings, metrics, holder, codec, cache=cache, observers=observers, turns=turns, router=canary
    )
    reads = BodyReads(settings.body_read_timeout_seconds)
    return AppState(
        settings,
        metrics,
        holder,
        pipeline,
        cache,
        drift,
        reads,
        prediction_log,
        feedback,
        gauges,
        shadow,
        canary,
    )


async def flush_metrics(buffer: MetricBuffer) -> None:
    """Writes pending metric updates every interval, so an idle worker's last requests show up too."""
    while True:
        await asyncio.sleep(buffer.interval)
        buffer.flush()


def add_routes(app: FastAPI, *routers: APIRouter) -> None:
    """The routers' routes on the app itself, in order. `include_router` would keep each router as one
    included branch, which FastAPI walks twice per request (to match, then to handle) and versions on
    every request: the per-call cost every door pays, and a door behind another router pays twice. The
    routers add no prefix, tags or dependencies of their own at inclusion, so the routes are the same."""
    for included in routers:
        app.router.routes.extend(included.routes)


def create_app(
    settings: Settings | None = None,
    *,
    metrics: Metrics | None = None,
    registry: ModelRegistry | None = None,
) -> FastAPI:
    settings = settings or Settings()
    metrics = metrics or Metrics(flush_interval=settings.metrics_flush_seconds)
    turns = SmallCallsFirst()
    state = build_state(settings, metrics, registry, turns)
    holder, drift = state.holder, state.drift

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        holder.start()
        canary = state.canary
        if canary is not None:  # routes from the worker's first call: a customer sees one model
            canary.start()
        await anyio.to_thread.run_sync(holder.first_attempt.wait, settings.startup_wait_seconds)
        if canary is not None:
            await anyio.to_thread.run_sync(canary.first_attempt.wait, settings.startup_wait_seconds)
        # What start-up built (modules, the app, the model) lives as long as the worker: out of the
        # collector's way, so that the full collections a 10,000-row batch's objects set off do not walk it
        # again each time, holding the GIL while small requests wait (`make bench`, section mixed). Garbage
        # is collected first: frozen, it would never be.
        gc.collect()
        gc.freeze()
        flusher = asyncio.create_task(flush_metrics(metrics.buffer))
        watchdog = asyncio.create_task(state.body_reads.watch())
        background = [b for b in (state.prediction_log, state.gauges, state.shadow) if b is not None]
        for service in background:
            service.start()
        try:
            yield
        finally:
            flusher.cancel()
            watchdog.cancel()
            metrics.buffer.flush()
            holder.stop()
            if canary is not None:
                canary.stop()
            if drift is not None:
                drift.close()  # the open window chunk goes to the spool
            for service in reversed(background):  # shadow scoring hands its last rows to the log first
                service.stop()  # the log writes what it holds: to the database, or the spool
            if state.feedback is not None:
                state.feedback.close()

    app = FastAPI(
        title="Propensity service",
        version="1",
        summary="Scores purchase propensity with the business-approved exercise_26 GLM.",
        lifespan=lifespan,
        # Metrics are Prometheus (below); FastAPI's native OpenTelemetry would look up the global providers
        # on every request to find none configured.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # Starlette would answer "/predict/" with a 307 to an absolute URL built from the Host header: a
        # client-chosen host in a Location. Without the redirect it is a 404 problem+json.
        redirect_slashes=False,
        # Swagger UI and ReDoc from the app's own copies of their assets, no CDN (openapi_docs)
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=operation_id,
    )
    state.attach(app)
    add_routes(app, router, v2_router, mlflow_router, feedback_router)
    openapi_docs.mount_offline_docs(app)
    install_error_handlers(app, metrics)
    app.add_middleware(
        ObservabilityMiddleware,
        metrics=metrics,
        turns=turns,
        small_below_bytes=state.pipeline.offload_min_bytes,
        slow_seconds=settings.slow_request_seconds,
        access_log=settings.access_log,
    )

    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                openapi_docs.component_schemas()
            )
            openapi_docs.add_parameters(schema)
            openapi_docs.drop_unreachable_422s(schema)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def gunicorn_app() -> FastAPI:
    """Entry point for gunicorn (`service.api.app:gunicorn_app()`): settings from the environment."""
    logging.basicConfig(
        level=Settings().log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    return create_app()
