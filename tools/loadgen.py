"""A small, bounded HTTP/1.1 load generator for loopback tests: exact counts of every outcome.

`concurrency` keep-alive connections each send requests one after another until `total` requests have
been sent or `deadline_seconds` have passed, whichever comes first; a request that gets no complete
response within `request_timeout` is a failure. Nothing is retried: every request is counted once, as a
status code or as a transport error ("reset", "eof", "timeout", "refused"). Requests are pre-built byte
strings; responses are parsed just enough to frame them (Content-Length or chunked) and to read one
header of interest (e.g. X-Cache).

It runs its own event loop (uvloop when installed) in a background thread, so a test can act on the
system (kill a replica, stop Redis) while it watches `progress`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    host: str
    port: int

    @classmethod
    def from_url(cls, url: str) -> Target:
        hostport = url.split("://", 1)[-1].split("/", 1)[0]
        host, _, port = hostport.rpartition(":")
        if not host.startswith("127.") and host not in ("localhost", "[::1]"):
            raise ValueError(f"load is only ever sent to loopback, not {host!r}")
        return cls(host, int(port))


def post(path: str, body: bytes, *, host: str = "127.0.0.1", headers: dict[str, str] | None = None) -> bytes:
    """A complete keep-alive POST request as bytes."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class LoadResult:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    header_values: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    invalid: int = 0  # 2xx answers whose content the caller's validate() rejected

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def failed(self) -> int:
        """Everything that is not a valid 2xx response: other statuses, transport errors, invalid bodies."""
        return self.sent - self.ok + self.invalid

    @property
    def rps(self) -> float:
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3

    def summary(self) -> str:
        return (
            f"{self.sent} sent, {self.ok} ok, {self.failed} failed {dict(self.statuses)} {dict(self.errors)} "
            f"in {self.elapsed:.2f}s ({self.rps:.0f} req/s, p50 {self.percentile_ms(0.5):.1f} ms, "
            f"p99 {self.percentile_ms(0.99):.1f} ms)"
        )


class _Response:
    __slots__ = ("body", "header", "status")

    def __init__(self, status: int, header: str | None, body: bytes) -> None:
        self.status = status
        self.header = header
        self.body = body


async def _read_response(reader: asyncio.StreamReader, header: bytes | None) -> tuple[_Response, bool]:
    """One response off the stream -> (response, connection may be reused)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = -1
    chunked = False
    keep = True
    found: str | None = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and value.lower() == b"close":
            keep = False
        if header is not None and name == header:
            found = value.decode("latin-1")
    body = b""
    if chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append((await reader.readexactly(size + 2))[:size])
            if size == 0:
                break
        body = b"".join(parts)
    elif length >= 0:
        body = await reader.readexactly(length)
    else:
        body = await reader.read()  # delimited by close
        keep = False
    return _Response(status, found, body), keep


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "reset"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "eof"
    return type(exc).__name__


class LoadRunner:
    """Sends `total` requests (cycling through `requests`) over `concurrency` connections, bounded in time."""

    def __init__(
        self,
        url: str,
        requests: Sequence[bytes],
        *,
        total: int,
        concurrency: int,
        deadline_seconds: float = 60.0,
        request_timeout: float = 30.0,
        header: str | None = None,
        validate: Callable[[int, int, str | None, bytes], bool] | None = None,
        max_rate: float | None = None,
    ) -> None:
        """`validate(request index, status, header value, body)` checks each 2xx answer's content; a
        False answer is counted in `result.invalid` (and so in `failed`). `max_rate` paces the requests
        (per second, over all connections), so a run lasts long enough to change things under it."""
        if not requests or total < 1 or concurrency < 1:
            raise ValueError("need at least one request, total >= 1 and concurrency >= 1")
        self.target = Target.from_url(url)
        self.requests = list(requests)
        self.total = total
        self.concurrency = min(concurrency, total)
        self.deadline_seconds = deadline_seconds
        self.request_timeout = request_timeout
        self.header = header.lower().encode() if header else None
        self.validate = validate
        self.max_rate = max_rate
        self._paced_from = 0.0
        self.result = LoadResult()
        self._next = 0
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def progress(self) -> int:
        """Requests completed so far (any outcome)."""
        return self.result.sent

    @property
    def in_flight(self) -> int:
        """Requests sent (or being sent) whose response has not arrived yet."""
        return self._next - self.result.sent

    def run(self) -> LoadResult:
        """Run in the calling thread and return the result."""
        loop_factory = None
        with contextlib.suppress(ImportError):
            import uvloop

            loop_factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(self._main())
        return self.result

    def start(self) -> LoadRunner:
        """Run in a background thread; `wait()` for the result."""

        def target() -> None:
            try:
                self.run()
            except BaseException as exc:  # surfaced by wait()
                self._error = exc

        self._thread = threading.Thread(target=target, name="loadgen", daemon=True)
        self._thread.start()
        return self

    def wait_for_progress(self, completed: int, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while self.progress < completed and time.monotonic() < end:
            if self._thread is not None and not self._thread.is_alive():
                break
            time.sleep(0.002)
        return self.progress >= completed

    def wait(self, timeout: float | None = None) -> LoadResult:
        assert self._thread is not None, "start() first"
        self._thread.join(
            timeout if timeout is not None else self.deadline_seconds + self.request_timeout + 5
        )
        if self._thread.is_alive():
            raise TimeoutError("the load generator did not finish in time")
        if self._error is not None:
            raise self._error
        return self.result

    async def _main(self) -> None:
        started = time.perf_counter()
        self._deadline = time.monotonic() + self.deadline_seconds
        self._paced_from = time.monotonic()
        await asyncio.gather(*(self._connection() for _ in range(self.concurrency)))
        self.result.elapsed = time.perf_counter() - started

    def _claim(self) -> int | None:
        if self._next >= self.total or time.monotonic() >= self._deadline:
            return None
        self._next += 1
        return self._next - 1

    async def _connection(self) -> None:
        result = self.result
        writer: asyncio.StreamWriter | None = None
        reader: asyncio.StreamReader | None = None
        try:
            while (index := self._claim()) is not None:
                if self.max_rate:
                    delay = self._paced_from + index / self.max_rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                request = self.requests[index % len(self.requests)]
                index %= len(self.requests)
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(self.request_timeout):
                        if writer is None:
                            reader, writer = await asyncio.open_connection(
                                self.target.host, self.target.port, limit=1 << 20
                            )
                        assert reader is not None
                        writer.write(request)
                        response, keep = await _read_response(reader, self.header)
                except (
                    OSError,
                    asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError,
                    TimeoutError,
                    ValueError,
                ) as exc:
                    result.sent += 1
                    result.errors[_error_kind(exc)] += 1
                    await _close(writer)
                    writer = None
                    continue
                result.sent += 1
                result.statuses[response.status] += 1
                if (
                    self.validate is not None
                    and 200 <= response.status < 300
                    and not self.validate(index, response.status, response.header, response.body)
                ):
                    result.invalid += 1
                result.latencies.append(time.perf_counter() - started)
                if response.header is not None:
                    result.header_values[response.header] += 1
                if not keep:
                    await _close(writer)
                    writer = None
        finally:
            await _close(writer)


async def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
