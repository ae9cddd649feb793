"""The Redis breaker always has a prober while it is open."""

from __future__ import annotations

import time

import redis

from service.store import Breaker


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
