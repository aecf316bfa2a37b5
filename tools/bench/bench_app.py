"""The app the benchmark serves: the production app plus bench-only routes, under the production gunicorn.

    python -m gunicorn -c python:service.api.gunicorn_conf tools.bench.bench_app:app

`create_app()` reads its settings from PROPENSITY_* like production. Added routes:

- POST /bench/hello  the hello-world reference. It reads the request with the same `request_head` and
  `read_body` as /predict, joins the body and returns a tiny constant JSON, through the same middleware, so
  a hello request costs exactly the HTTP and framework layers of a /predict request (same body bytes in,
  one small JSON out); the ratio /predict : hello isolates what /predict adds (the scoring pipeline:
  decode, score, records, encode, metrics).
- POST /bench/naive  the naive baseline (tools/bench/naive.py).
- GET  /bench/worker the answering worker's pid and whether its model is loaded, so the benchmark can
  wait until EVERY worker is ready, not just the first one to answer.
"""

from __future__ import annotations

import os

import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from service.api.app import gunicorn_app
from service.api.body import read_body
from service.api.calls import request_head
from service.api.state import app_state
from tools.bench.naive import router as naive_router

JSON = "application/json"
HELLO = b'{"hello":"world"}'

router = APIRouter()


@router.post("/bench/hello")
async def hello(request: Request) -> Response:
    request_head(request.scope)
    body = await read_body(request, app_state(request).settings.max_body_bytes)
    body.joined()
    return Response(HELLO, media_type=JSON)


@router.get("/bench/worker")
async def worker(request: Request) -> Response:
    ready = app_state(request).holder.current is not None
    return Response(orjson.dumps({"pid": os.getpid(), "ready": ready}), media_type=JSON)


def build() -> FastAPI:
    application = gunicorn_app()
    application.include_router(router)
    application.include_router(naive_router)
    return application


app = build()
