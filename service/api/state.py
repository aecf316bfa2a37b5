"""The app's services, typed: built once by the app factory, read by the routes through `app_state`."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request

from service.api.body import BodyReads
from service.monitoring.drift_monitor import DriftMonitor
from service.monitoring.feedback import Feedback
from service.monitoring.performance_gauges import PerformanceGauges
from service.monitoring.prediction_log import PredictionLog
from service.monitoring.shadow import ShadowScorer
from service.serving.cache import ResponseCache
from service.serving.canary import CanaryRouter
from service.serving.holder import ModelHolder
from service.serving.metrics import Metrics
from service.serving.pipeline import ScoringPipeline
from service.settings import Settings


@dataclass(frozen=True)
class AppState:
    settings: Settings
    metrics: Metrics
    holder: ModelHolder
    pipeline: ScoringPipeline
    cache: ResponseCache | None
    drift: DriftMonitor | None
    body_reads: BodyReads
    prediction_log: PredictionLog | None = None
    feedback: Feedback | None = None
    gauges: PerformanceGauges | None = None
    shadow: ShadowScorer | None = None
    canary: CanaryRouter | None = None

    def attach(self, app: Starlette) -> None:
        app.state.propensity = self

    @staticmethod
    def of(app: Starlette) -> AppState:
        state: AppState = app.state.propensity
        return state


def app_state(request: Request) -> AppState:
    """The services of the app that received `request`."""
    state: AppState = request.app.state.propensity
    return state
