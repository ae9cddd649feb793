"""The Redis breaker always has a prober while it is open."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from service.store import Breaker, BreakerOpen


class Probe:
    def __init__(self) -> None:
        self.up = False

    def ping(self) -> bool:
        if not self.up:
            raise redis.ConnectionError("down")
        return True


def test_a_trip_racing_the_probers_exit_still_gets_a_prober() -> None:
    probe = Probe()
    breaker = Breaker(probe)  # type: ignore[arg-type]
    for _ in range(50):  # close and trip again at once, repeatedly
        breaker.trip(redis.ConnectionError("x"))
        breaker.close()
        breaker.trip(redis.ConnectionError("x"))
        assert breaker.is_open and breaker._thread is not None
    probe.up = True
    deadline = time.monotonic() + 10
    while breaker.is_open and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not breaker.is_open  # the prober closed it once Redis answered


class CountingProbe(Probe):
    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.pings = 0

    def ping(self) -> bool:
        self.pings += 1
        time.sleep(self.delay)
        return super().ping()


def _opened(probe: Probe) -> Breaker:
    breaker = Breaker(probe)  # type: ignore[arg-type]
    breaker.open_since = time.monotonic()  # open, without a prober: only callers ping
    return breaker


def test_a_call_finds_redis_back_without_waiting_for_the_prober() -> None:
    probe = CountingProbe()
    probe.up = True
    breaker = _opened(probe)
    breaker.check()  # no BreakerOpen: the call's own ping closed it
    assert not breaker.is_open and probe.pings == 1


def test_while_redis_is_down_a_request_pays_one_ping_at_most() -> None:
    probe = CountingProbe()
    breaker = _opened(probe)
    with pytest.raises(BreakerOpen):
        breaker.check()
    assert probe.pings == 1
    time.sleep(0.05)  # past the gap between pings, but the same thread within its second
    with pytest.raises(BreakerOpen):
        breaker.check()
    assert probe.pings == 1
    breaker.new_request()  # the thread's next request may ping again
    with pytest.raises(BreakerOpen):
        breaker.check()
    assert probe.pings == 2
    # a ping in flight (Redis frozen: it waits for its timeout): other callers fail at once
    slow = CountingProbe(delay=0.5)
    breaker = _opened(slow)
    errors: list[float] = []

    def call() -> None:
        started = time.monotonic()
        try:
            breaker.check()
        except BreakerOpen:
            errors.append(time.monotonic() - started)

    first = threading.Thread(target=call)
    first.start()
    time.sleep(0.1)
    others = [threading.Thread(target=call) for _ in range(5)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join()
    assert slow.pings == 1 and len(errors) == 6
    assert all(e < 0.2 for e in sorted(errors)[:5])  # only the pinging caller waited


def test_catch_ups_do_not_run_on_the_caller_that_closed_the_breaker() -> None:
    probe = CountingProbe()
    probe.up = True
    breaker = _opened(probe)
    ran_on: list[str] = []
    done = threading.Event()
    breaker.listeners.append(lambda: (ran_on.append(threading.current_thread().name),
                                      done.set()))
    breaker.check()
    assert done.wait(5) and ran_on == ["redis-catch-up"]
