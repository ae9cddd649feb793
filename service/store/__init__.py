"""The only code that knows Redis keys: names, serialisation, pipelines, transactions.

Also how a process reaches Redis: a URL, or Sentinel (the client then follows a failover by
itself), and the breaker that makes an unreachable Redis cost one timeout, not one per call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.sentinel import Sentinel, SentinelManagedConnection

PREFIX = "tw:"
log = logging.getLogger("tagwarden.store")

# How long one Redis command may take before the caller gets a 503 (store_unavailable); the
# gateway uses TAGWARDEN_REDIS_TIMEOUT (default 0.5 s), this is the default of connect().
TIMEOUT = 2.0
# While the breaker is open, Redis is probed this often (seconds) by a background thread.
PROBE_INTERVAL = 0.25
# ... and by a caller that would be refused, when no probe is in flight and none ended this
# recently (seconds): a process notices Redis is back at its first call, not its next probe.
TRIAL_GAP = 0.02
# A thread pings at most once this often (seconds) or once per request (the gateway calls
# new_request), so a request meets one ping's timeout at most (as it meets one command's
# timeout when it is the call that opens the breaker).
TRIAL_PER_THREAD = 1.0


class BreakerOpen(redis.ConnectionError):
    """Redis is known to be unreachable right now (the breaker is open): no call is tried."""


class Breaker:
    """Per-process record of Redis being unreachable.

    A connection error or timeout opens it; while open, guarded connections fail at once
    (a write answers 503 immediately instead of after a socket timeout, a read on the pull
    path falls back to its cache) and one background thread pings Redis every 0.25 s; the
    first answer closes it again. A call that meets the open breaker while no ping is in
    flight pings first (half-open): without it, a process would refuse calls for up to one
    probe interval after Redis is back, while its siblings already serve them (a token
    created on one just then could not be verified on another)."""

    def __init__(self, probe: redis.Redis | None = None) -> None:
        self.probe = probe
        self.open_since: float | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._probing = threading.Lock()  # held by the one ping in flight
        self._last_probe = 0.0  # when the last ping ended (monotonic)
        self._trials = threading.local()  # .at: when this thread last pinged
        self.listeners: list[Any] = []  # called (no arguments) when Redis is back

    @property
    def is_open(self) -> bool:
        """Whether Redis is known to be unreachable."""
        return self.open_since is not None

    def new_request(self) -> None:
        """This thread starts a new request: it may ping again (see TRIAL_PER_THREAD)."""
        self._trials.at = None

    def check(self) -> None:
        """BreakerOpen while open, unless this call's own ping finds Redis back."""
        if self.open_since is not None and not self._ping(trial=True):
            raise BreakerOpen("state store (Redis) unreachable")

    def _ping(self, trial: bool) -> bool:
        """Ping Redis through the probe client, closing the breaker when it answers. A trial
        (a caller's ping) is skipped — False — while another ping is in flight, when one ended
        less than TRIAL_GAP ago or when this thread pinged less than TRIAL_PER_THREAD ago: the
        callers of a process make one ping at a time, a request at most one."""
        if self.probe is None:
            return False
        last = getattr(self._trials, "at", None)
        if trial and last is not None and time.monotonic() - last < TRIAL_PER_THREAD:
            return False
        if not self._probing.acquire(blocking=not trial):
            return False
        try:
            if trial:
                if time.monotonic() - self._last_probe < TRIAL_GAP:
                    return False
                self._trials.at = time.monotonic()
            try:
                answered = bool(self.probe.ping())
            except (redis.RedisError, OSError):
                answered = False
            self._last_probe = time.monotonic()
        finally:
            self._probing.release()
        if answered:
            self.close()
        return answered

    def trip(self, exc: BaseException) -> None:
        """Open (once) and start the prober."""
        with self._lock:
            if self.open_since is not None:
                return
            self.open_since = time.monotonic()
            log.warning("redis unreachable (%s): failing fast until it answers",
                        type(exc).__name__)
            if self.probe is not None and self._thread is None:
                self._thread = threading.Thread(target=self._run, name="redis-breaker",
                                                daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Redis answers again."""
        with self._lock:
            if self.open_since is None:
                return
            down = time.monotonic() - self.open_since
            self.open_since = None
        log.warning("redis reachable again after %.1f s", down)
        if self.listeners:  # not on the caller whose ping closed it: catch-ups take time
            threading.Thread(target=self._catch_up, name="redis-catch-up", daemon=True).start()

    def _catch_up(self) -> None:
        for listener in list(self.listeners):
            try:
                listener()
            except Exception:  # noqa: BLE001 - a catch-up is best effort
                log.exception("catch-up after a Redis outage failed")

    def _run(self) -> None:
        """Probe until Redis answers. The prober leaves under the lock, so a trip racing its
        exit either keeps it running or starts a new one (never a breaker left open with no
        prober, which would refuse every call of this process until a restart)."""
        assert self.probe is not None
        while True:
            with self._lock:
                if self.open_since is None:
                    self._thread = None
                    return
            time.sleep(PROBE_INTERVAL)
            self._ping(trial=False)


class _Guarded:
    """Connection mixin: refuse at once while the breaker is open, open it on a network
    failure."""

    breaker: Breaker

    def __init__(self, *args: Any, breaker: Breaker, **kwargs: Any) -> None:
        self.breaker = breaker
        super().__init__(*args, **kwargs)

    def _guard(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        self.breaker.check()
        try:
            return call(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.breaker.trip(exc)
            raise

    def connect(self) -> None:
        self._guard(super().connect)  # type: ignore[misc]

    def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        self._guard(super().send_packed_command, *args, **kwargs)  # type: ignore[misc]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        return self._guard(super().read_response, *args, **kwargs)  # type: ignore[misc]


class GuardedConnection(_Guarded, redis.Connection):
    """A TCP connection behind a breaker."""


class GuardedSentinelConnection(_Guarded, SentinelManagedConnection):
    """A Sentinel-managed connection (follows the current primary) behind a breaker."""


def _url_parts(url: str) -> dict[str, Any]:
    """db, username and password of a redis:// URL (what Sentinel mode takes from it)."""
    parts = urlsplit(url)
    path = parts.path.strip("/")
    return {"db": int(path) if path.isdigit() else 0, "username": parts.username or None,
            "password": parts.password or None}


def connect(url: str, *, decode: bool = True, timeout: float = TIMEOUT,
            sentinels: tuple[tuple[str, int], ...] = (), master: str = "tagwarden",
            breaker: Breaker | None = None) -> redis.Redis:
    """A Redis client that fails fast (a quick 503 beats a hang). With `sentinels` it asks
    them for the current primary of `master` and asks again after a failover; `url` then
    only gives db and credentials. With a `breaker`, an unreachable Redis costs one timeout
    per process, not one per command."""
    options: dict[str, Any] = dict(decode_responses=decode, socket_timeout=timeout,
                                   socket_connect_timeout=min(timeout, 1.0),
                                   health_check_interval=15, retry_on_timeout=False)
    if breaker is not None:
        options["breaker"] = breaker
    if sentinels:
        sentinel = Sentinel(list(sentinels), socket_timeout=min(timeout, 1.0),
                            sentinel_kwargs={"socket_timeout": min(timeout, 1.0),
                                             "socket_connect_timeout": min(timeout, 1.0)})
        if breaker is not None:
            options["connection_class"] = GuardedSentinelConnection
        return sentinel.master_for(master, **_url_parts(url), **options)
    if breaker is None or urlsplit(url).scheme != "redis":  # TLS and sockets: unguarded
        options.pop("breaker", None)
        return redis.Redis.from_url(url, **options)
    return redis.Redis.from_url(url, connection_class=GuardedConnection, **options)


def guarded(url: str, *, timeout: float, sentinels: tuple[tuple[str, int], ...] = (),
            master: str = "tagwarden") -> tuple[redis.Redis, Breaker]:
    """A client behind a new breaker, and the breaker (its prober has its own client)."""
    probe = connect(url, timeout=timeout, sentinels=sentinels, master=master)
    breaker = Breaker(probe)
    return connect(url, timeout=timeout, sentinels=sentinels, master=master,
                   breaker=breaker), breaker


class NotReplicated(redis.ConnectionError):
    """A write reached the primary but not the replicas it must reach before it is answered."""


def durable(pipe: Any, replicas: int, timeout_ms: int) -> None:
    """Queue a WAIT on the pipeline that carries a write (WAIT counts the acknowledgements
    of this connection's writes, so it must share the write's connection)."""
    if replicas:
        pipe.execute_command("WAIT", replicas, timeout_ms)


def check_replicated(acknowledged: int, replicas: int) -> None:
    """NotReplicated unless at least `replicas` acknowledged."""
    if acknowledged < replicas:
        raise NotReplicated(f"{acknowledged} of {replicas} Redis replicas acknowledged")


def replicas_online(client: redis.Redis, max_lag: int = 1) -> int:
    """How many replicas the primary streams to now (online, acknowledged within `max_lag`
    seconds): asked before a governed write, so that a write that could not be acknowledged
    is refused before anything is written."""
    info = client.info("replication")
    return sum(1 for name, value in info.items()
               if name.startswith("slave") and isinstance(value, dict)
               and value.get("state") == "online" and int(value.get("lag", max_lag + 1)) <= max_lag)


def replicated(client: redis.Redis, replicas: int, timeout_ms: int) -> None:
    """Every write this process made before the call is on `replicas` replicas, else
    NotReplicated. Replication is one ordered stream, so a barrier write acknowledged by
    `replicas` replicas (WAIT on its own connection) proves every write answered before it,
    whichever pooled connection carried them."""
    pipe = client.pipeline(transaction=False)
    pipe.incr(key("durability", "barrier"))
    durable(pipe, replicas, timeout_ms)
    check_replicated(pipe.execute()[-1], replicas)


def script_then(client: redis.Redis, script: Any, keys: list[str], args: list[Any],
                then: Callable[[Any], None] | None = None) -> list[Any]:
    """Run a registered script and what `then` queues after it (a WAIT) in one pipeline, in
    one round trip: EVALSHA alone, without the SCRIPT EXISTS round trip redis-py's pipelines
    send first for every script they hold. A server that does not know the script (restarted,
    failed over) refuses the EVALSHA before running anything: the script is loaded and the
    pipeline sent once more."""
    def send() -> list[Any]:
        pipe = client.pipeline(transaction=False)
        pipe.evalsha(script.sha, len(keys), *keys, *args)
        if then is not None:
            then(pipe)
        return list(pipe.execute())

    try:
        return send()
    except redis.exceptions.NoScriptError:
        client.script_load(script.script)
        return send()


def key(*parts: str) -> str:
    """Build a namespaced key; only modules of service.store call this."""
    return PREFIX + ":".join(parts)
