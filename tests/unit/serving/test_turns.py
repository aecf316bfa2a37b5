"""Small calls first: a big call's pause waits while small calls are in flight, and never for long."""

from __future__ import annotations

import threading

from service.serving.turns import SmallCallsFirst, no_pause


def pausing(turns: SmallCallsFirst) -> tuple[threading.Thread, threading.Event]:
    done = threading.Event()

    def run() -> None:
        turns.pause()
        done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done


def test_a_pause_with_no_small_call_in_flight_does_not_wait() -> None:
    turns = SmallCallsFirst(max_pause_seconds=3600)
    thread, done = pausing(turns)
    thread.join(30)
    assert done.is_set()
    no_pause()  # the loop's own pause: nothing to wait for


def test_a_pause_waits_until_the_last_small_call_ends() -> None:
    turns = SmallCallsFirst(max_pause_seconds=3600)
    turns.begin()
    turns.begin()
    assert turns.in_flight == 2
    thread, done = pausing(turns)
    turns.end()
    assert not done.wait(0.2)  # one small call is still in flight: the big call stays paused
    turns.end()
    assert done.wait(30)
    thread.join(30)
    assert turns.in_flight == 0


def test_a_pause_gives_up_after_its_bound() -> None:
    turns = SmallCallsFirst(max_pause_seconds=0.01)
    turns.begin()  # a stream of small calls that never ends must not starve the big call
    thread, done = pausing(turns)
    assert done.wait(30)
    thread.join(30)
    turns.end()
