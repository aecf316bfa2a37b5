"""Load shedding: a per-worker budget of in-flight rows and body bytes.

A worker holds every body it is reading or waiting to score, and the batches it has decoded; nothing else
bounds how many of them there are. The budget does: a call takes its body bytes (the declared
Content-Length, before a byte of the body is read; a chunked body as its chunks arrive) and its rows
(once they are decoded), and gives them back when it ends, however it ends. A call that would exceed the
budget is refused at once with `Overloaded` (503 + Retry-After), never queued, so a flood of big bodies
costs the worker neither memory nor a growing wait. Settings guarantee that one request of the largest
allowed size fits on an idle worker.

Everything is taken and given back on the event loop, so nothing here takes a lock: the small calls'
path pays an addition and a comparison. A call decoded in a worker thread takes its rows through the
loop (one hop, for a call that takes a hundred milliseconds anyway).
"""

from __future__ import annotations

from typing import Any

from service.errors import Overloaded

# A 10,000-row call is scored in well under a second, so a slot is likely free by then (and nginx retries
# a 503 on another replica at once).
RETRY_AFTER_SECONDS = 1


class Budget:
    def __init__(self, max_rows: int, max_bytes: int, shed: Any = None) -> None:
        """`shed`: a Prometheus counter labelled by reason ("rows", "bytes"), counted once per refusal."""
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.rows = 0
        self.bytes = 0
        self._shed = {reason: shed.labels(reason) for reason in ("rows", "bytes")} if shed is not None else {}

    def take_bytes(self, n: int) -> None:
        """Take `n` body bytes, or raise Overloaded when they do not fit."""
        if self.bytes + n > self.max_bytes:
            raise self._refuse(
                "bytes",
                f"this worker holds {self.bytes} body bytes in flight; {n} more would exceed its limit of "
                f"{self.max_bytes} (PROPENSITY_MAX_INFLIGHT_BYTES)",
            )
        self.bytes += n

    def take_rows(self, n: int) -> None:
        """Take `n` rows, or raise Overloaded when they do not fit."""
        if self.rows + n > self.max_rows:
            raise self._refuse(
                "rows",
                f"this worker scores {self.rows} rows in flight; {n} more would exceed its limit of "
                f"{self.max_rows} (PROPENSITY_MAX_INFLIGHT_ROWS)",
            )
        self.rows += n

    def give_back(self, rows: int, nbytes: int) -> None:
        """Return what a call took."""
        self.rows -= rows
        self.bytes -= nbytes

    def _refuse(self, reason: str, detail: str) -> Overloaded:
        counter = self._shed.get(reason)
        if counter is not None:
            counter.inc()
        return Overloaded(
            f"{detail}; retry in {RETRY_AFTER_SECONDS} s", reason=reason, retry_after=RETRY_AFTER_SECONDS
        )
