"""A 10,000-row batch does not hold up a small request on the same app: it is scored off the event loop."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import anyio.to_thread
import httpx
import orjson
import pytest

from service.api.app import create_app
from service.api.state import AppState
from service.model.registry import Registry
from service.model.schema import example_rows
from service.serving.batch import Batch
from service.serving.scorer import Scored
from service.settings import Settings

ROWS: list[dict[str, Any]] = example_rows()["rows"]
PHAT = [e["phat"] for e in example_rows()["expected"]]
JSON = {"content-type": "application/json"}


def test_a_small_request_is_answered_while_a_big_batch_is_scored(approved_registry: Registry) -> None:
    app = create_app(Settings(artifacts_dir=approved_registry.root, reload_interval_seconds=0))
    started, release = threading.Event(), threading.Event()
    order: list[str] = []

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with app.router.lifespan_context(app):
            model = AppState.of(app).holder.current
            assert model is not None
            real = model.score_batch

            def gated(batch: Batch, **kwargs: Any) -> Scored:
                if len(batch) == 10_000:  # hold the big batch mid-scoring until the small one is answered
                    started.set()
                    assert release.wait(30)
                return real(batch, **kwargs)

            model.score_batch = gated  # type: ignore[method-assign]
            lean = [{k: ROWS[i % 5].get(k) for k in model.used_columns} for i in range(10_000)]
            responses: dict[str, httpx.Response] = {}
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

                async def big() -> None:
                    responses["big"] = await client.post("/predict", content=orjson.dumps(lean), headers=JSON)
                    order.append("big answered")

                async with anyio.create_task_group() as tg:
                    tg.start_soon(big)
                    assert await anyio.to_thread.run_sync(started.wait, 30)
                    responses["small"] = await client.post(
                        "/predict", content=orjson.dumps(ROWS[1]), headers=JSON
                    )
                    order.append("small answered")
                    release.set()
            return responses["small"], responses["big"]

    small, big = anyio.run(scenario)
    assert order == ["small answered", "big answered"]
    assert small.status_code == big.status_code == 200
    assert small.json()["phat"] == pytest.approx(PHAT[1], abs=1e-9)
    assert [r["phat"] for r in big.json()[:5]] == pytest.approx(PHAT, abs=1e-9) and len(big.json()) == 10_000
    assert big.headers["x-model-version"] == small.headers["x-model-version"] == "v1"
