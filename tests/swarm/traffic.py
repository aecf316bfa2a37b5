"""The Swarm suites' traffic: requests with the answers in-process scoring gives, and a bounded load in
the background that checks every answer against them."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from service.serving.decoding import decode_rows
from service.serving.scorer import CompiledModel
from tools.bench.cluster_bench import make_rows
from tools.loadgen import LoadResult, LoadRunner, post


@dataclass(frozen=True)
class Cases:
    """Requests (POST /predict with the API key) and, for each, the body in-process scoring gives."""

    requests: list[bytes]
    expected: list[bytes]

    def rows(self, total: int) -> int:
        """The rows `total` requests carry (loadgen cycles through the requests in order)."""
        per_case = [len(r) if isinstance(r := orjson.loads(e), list) else 1 for e in self.expected]
        return sum(per_case[i % len(per_case)] for i in range(total))

    def validator(self, versions: set[str]) -> Callable[[int, int, str | None, bytes], bool]:
        """For loadgen: a 2xx answer is valid iff its body equals in-process scoring byte for byte and its
        X-Model-Version is one of `versions` (the versions' scores are equal: they are one model)."""
        return lambda index, status, version, body: body == self.expected[index] and version in versions


def make_cases(key: str, model: CompiledModel, n_single: int, n_batch: int, n_big: int = 4) -> Cases:
    """Single rows, batches of 2..20 rows and `n_big` of 40..100 rows (over 64 KB: the server's column
    decoder and the Redis cache answer those), every value a string (tools/bench/cluster_bench.py)."""
    rows = make_rows(n_single + n_batch * 20 + n_big * 100, seed=2626)
    bodies = [orjson.dumps(r) for r in rows[:n_single]]
    rest = rows[n_single:]
    bodies += [orjson.dumps(rest[i * 20 : i * 20 + 2 + i % 19]) for i in range(n_batch)]
    big = rest[n_batch * 20 :]
    bodies += [orjson.dumps(big[i * 100 : i * 100 + 40 + 20 * i]) for i in range(n_big)]
    expected = []
    for body in bodies:  # the reference path: full JSON decode, score, encode as the route does
        decoded = decode_rows(body, max_rows=10_000, max_errors=100)
        records = model.records(model.score(decoded.rows))
        expected.append(orjson.dumps(records[0] if decoded.single else records))
    requests = [post("/predict", body, headers={"X-API-Key": key}) for body in bodies]
    return Cases(requests, expected)


class BackgroundLoad:
    """loadgen in a thread until stop(): short runs of at most RUN_REQUESTS, one every RUN_SECONDS (so at
    most 400 requests/s, leaving the shared 2-core machine some room), all of them within max_seconds,
    each to the next of `urls`. Every answer is checked against in-process scoring."""

    RUN_REQUESTS = 100
    RUN_SECONDS = 0.25

    def __init__(
        self,
        cases: Cases,
        versions: set[str],
        *,
        urls: Sequence[str],
        concurrency: int = 2,
        max_seconds: float = 240,
    ):
        self.cases = cases
        self.urls = list(urls)
        self.versions = versions
        self.concurrency = concurrency
        self.max_seconds = max_seconds
        self.result = LoadResult()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="background-load", daemon=True)

    def __enter__(self) -> BackgroundLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        end = time.monotonic() + self.max_seconds
        try:
            for url in itertools.cycle(self.urls):  # one run per URL in turn
                if self._stop.is_set() or time.monotonic() >= end:
                    break
                started = time.monotonic()
                run = LoadRunner(
                    url,
                    self.cases.requests,
                    total=self.RUN_REQUESTS,
                    concurrency=self.concurrency,
                    deadline_seconds=max(0.05, min(self.RUN_SECONDS, end - started)),
                    header="X-Model-Version",
                    validate=self.cases.validator(self.versions),
                ).run()
                r = self.result
                r.sent += run.sent
                r.invalid += run.invalid
                r.statuses.update(run.statuses)
                r.errors.update(run.errors)
                r.header_values.update(run.header_values)
                r.latencies.extend(run.latencies)
                r.elapsed += run.elapsed
                self._stop.wait(self.RUN_SECONDS - (time.monotonic() - started))
        except BaseException as exc:
            self._error = exc

    def stop(self) -> LoadResult:
        self._stop.set()
        self._thread.join(60)
        if self._error is not None:
            raise self._error
        assert not self._thread.is_alive(), "the load generator did not stop"
        return self.result
