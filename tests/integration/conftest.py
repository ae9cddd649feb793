"""Real redis-server, docker-registry and gunicorn gateway, started once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests

from testkit import oci, procs

CI_CREDS = f"ci:{procs.ADMIN_TOKEN}"
oci.DEFAULT_CREDS = CI_CREDS
# /v2 calls of the tests authenticate like `docker login` would (Basic, token as password).
V2 = requests.Session()
V2.auth = ("ci", procs.ADMIN_TOKEN)


@dataclass
class Stack:
    """Where the services of one test stack listen, and their processes."""

    redis: procs.Proc
    registry: procs.Proc
    gateway: procs.Proc
    workdir: Path
    env: dict[str, str]
    worker: procs.Proc | None = None

    @property
    def gw(self) -> str:
        return f"127.0.0.1:{self.gateway.port}"

    @property
    def gw_url(self) -> str:
        return f"http://{self.gw}"

    @property
    def reg(self) -> str:
        return f"127.0.0.1:{self.registry.port}"

    @property
    def reg_url(self) -> str:
        return f"http://{self.reg}"

    @property
    def cli_env(self) -> dict[str, str]:
        """The stack's environment plus what the `tagwarden` CLI reads to reach its API."""
        return {**self.env, "TAGWARDEN_URL": self.gw_url, "TAGWARDEN_TOKEN": procs.ADMIN_TOKEN}

    def redis_client(self) -> redis.Redis:
        return redis.Redis(port=self.redis.port, decode_responses=True)

    def admin(self) -> requests.Session:
        """A session carrying the bootstrap admin token."""
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {procs.ADMIN_TOKEN}"
        return session

    def stop(self) -> None:
        for proc in (self.worker, self.gateway, self.registry, self.redis):
            if proc is not None:
                proc.stop()


TEST_ENV = {"TAGWARDEN_OUTBOUND_ALLOWLIST": "127.0.0.1", "TAGWARDEN_DELIVERY_BACKOFF": "1",
            "TAGWARDEN_DELIVERY_TIMEOUT": "2",
            # on, as in the front-proxy deployment: only requests through nginx are affected
            "TAGWARDEN_BLOB_ACCEL_PATH": procs.ACCEL_PATH,
            # on, so that the mount attacks (tests/integration/test_attacks.py) also try the
            # gateway's own search for a source
            "TAGWARDEN_AUTOMATIC_MOUNT": "true",
            # every test client is 127.0.0.1: the shared stacks count failed logins but never
            # lock it out (tests/faults/test_hostile_net.py runs the lockout on its own stacks)
            "TAGWARDEN_AUTH_FAILURE_LIMIT": "100000/minute"}


def start_stack(workdir: Path, worker: bool = True, fsync: str = "everysec",
                without: tuple[str, ...] = (), **env_extra: str) -> Stack:
    """Redis, a registry notifying the gateway, the gateway under gunicorn, an RQ worker
    (`without`: TEST_ENV variables to leave unset)."""
    redis_proc = procs.redis_server(workdir / "redis", fsync=fsync)
    gw_port = procs.free_port()
    registry = procs.registry_server(
        workdir / "registry", f"http://127.0.0.1:{gw_port}/api/v1/webhooks/registry"
    )
    # as deployed by `make run` and docker-compose.yml: the gateway reads the registry's
    # storage (blob GETs with sendfile, manifests from its cache after the link files)
    test_env = {k: v for k, v in {**TEST_ENV, "TAGWARDEN_REGISTRY_STORAGE": str(
        workdir / "registry" / "data")}.items() if k not in without}
    env = procs.gateway_env(redis_proc.port, registry.port, **{**test_env, **env_extra})
    gateway = procs.gateway_server(workdir / "gateway", env, port=gw_port)
    stack = Stack(redis_proc, registry, gateway, workdir, env)
    if worker:
        stack.worker = procs.worker_process(workdir / "worker", env)
    return stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The shared stack for integration tests."""
    s = start_stack(tmp_path_factory.mktemp("stack"))
    yield s
    s.stop()


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[Stack]:
    """A stack of its own, for tests that stop or break services."""
    s = start_stack(tmp_path)
    yield s
    s.stop()
