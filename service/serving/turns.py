"""Small calls first: a big call in a worker thread steps aside while small calls are being answered.

A worker process has one GIL. A big call offloaded to a thread (pipeline.py) and the event loop answering
small calls take turns on it; the interpreter hands it over only every switch interval, and the loop
gives it up at every pass through its selector, so a small call that needs a few passes waits a few
intervals for each. Here the loop counts the small calls in flight (`begin`/`end`, loop thread only),
and the big call, at each boundary between two slices of its work (`pause`), waits while any are, up to
`max_pause_seconds` per boundary so that a steady stream of small calls cannot starve it.
"""

from __future__ import annotations

import threading

MAX_PAUSE_SECONDS = 0.05


def no_pause() -> None:
    """The pause of work on the event loop itself, which must never wait for the loop."""


class SmallCallsFirst:
    def __init__(self, max_pause_seconds: float = MAX_PAUSE_SECONDS) -> None:
        self.max_pause_seconds = max_pause_seconds
        self._small = 0
        self._none = threading.Event()  # set while no small call is in flight
        self._none.set()

    @property
    def in_flight(self) -> int:
        return self._small

    def begin(self) -> None:
        """A small call started (event loop thread)."""
        self._small += 1
        if self._small == 1:
            self._none.clear()

    def end(self) -> None:
        """A small call finished (event loop thread)."""
        self._small -= 1
        if self._small == 0:
            self._none.set()

    def pause(self) -> None:
        """At a boundary of a big call (worker thread): wait while small calls are in flight, GIL released."""
        if not self._none.is_set():
            self._none.wait(self.max_pause_seconds)
