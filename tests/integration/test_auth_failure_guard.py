"""The failed-login guard's per-process belief that an address is clear
(TAGWARDEN_AUTH_FAILURE_LIMIT):
it saves the Redis round trip on every authenticated request, and never lets a wrong guess
through once the address is over the limit."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import redis

from service.http.security import AuthFailureGuard, RateLimited
from testkit import procs


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    proc = procs.redis_server(tmp_path_factory.mktemp("guard-redis"))
    yield proc
    proc.stop()


@pytest.fixture()
def svc(server) -> SimpleNamespace:  # what the limiter reads of the services: a real Redis
    client = redis.Redis(port=server.port)
    client.flushall()
    return SimpleNamespace(redis=client, breaker=None)


def test_a_clear_address_costs_no_redis_call_and_a_lockout_still_holds(svc, monkeypatch):
    here, elsewhere = AuthFailureGuard(svc, "3/minute"), AuthFailureGuard(svc, "3/minute")
    here.check("198.51.100.7")
    here.succeeded("198.51.100.7")
    asked = []
    monkeypatch.setattr(here.counter, "reset_in", lambda *a: asked.append(a))
    here.check("198.51.100.7")
    assert asked == []  # believed clear: no round trip
    monkeypatch.undo()
    for _ in range(3):  # another gateway process sees three wrong guesses
        elsewhere.check("198.51.100.7")
        elsewhere.failed("198.51.100.7")
    with pytest.raises(RateLimited):
        elsewhere.check("198.51.100.7")
    here.check("198.51.100.7")  # the belief still holds here for up to CLEAR_FOR ...
    with pytest.raises(RateLimited):
        here.failed("198.51.100.7")  # ... but a wrong guess is counted and refused
    with pytest.raises(RateLimited):
        here.check("198.51.100.7")  # and the belief is gone


def test_the_belief_ends_after_clear_for(svc, monkeypatch):
    guard, other = AuthFailureGuard(svc, "2/minute"), AuthFailureGuard(svc, "2/minute")
    guard.succeeded("192.0.2.9")
    for _ in range(2):
        other.failed("192.0.2.9")
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + AuthFailureGuard.CLEAR_FOR + 0.1)
    with pytest.raises(RateLimited):
        guard.check("192.0.2.9")


def test_the_belief_is_bounded(svc):
    guard = AuthFailureGuard(svc, "5/minute")
    for i in range(AuthFailureGuard.CLEAR_MAX + 10):
        guard.succeeded(f"10.0.{i // 256}.{i % 256}")
    assert len(guard._clear) <= AuthFailureGuard.CLEAR_MAX
