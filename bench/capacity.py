"""`python -m bench.capacity [N]`: Redis bytes per promotion record, tag-map entry, registry
event and audit entry, measured as `INFO memory` deltas over N writes through the real stores
(a private redis-server), and the sizing they imply (README, Operating)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable

import redis

from service.store.audit import AuditStore
from service.store.events import EventStore
from service.store.inbox import Inbox
from service.store.promotions import PromotionStore
from service.store.tagmap import TagMap


def _redis() -> tuple[subprocess.Popen[bytes], redis.Redis, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="tw-capacity-")
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port",
                             str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                             "no", "--dir", workdir], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port, decode_responses=True)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return proc, client, workdir


def _digest(i: int) -> str:
    return "sha256:" + f"{i:064x}"


def _per_item(client: redis.Redis, n: int, write: Callable[[int], None]) -> float:
    client.flushall()
    client.execute_command("MEMORY", "PURGE")
    before = client.info("memory")["used_memory"]
    for i in range(n):
        write(i)
    return (client.info("memory")["used_memory"] - before) / n


def measure(n: int = 20_000) -> dict[str, float]:
    """Bytes per item of each kind that grows with use."""
    proc, client, workdir = _redis()
    try:
        repos = [f"team-{i % 500}/app-{i % 7}" for i in range(n)]
        promotions = PromotionStore(client)

        def promote(i: int) -> None:
            repo, env = repos[i], ("develop", "staging", "production")[i % 3]
            record = {"id": f"prm_{i:012x}{uuid.uuid4().hex[:12]}", "kind": "promotion",
                      "repository": repo, "environment": env, "digest": _digest(i),
                      "previous_digest": _digest(i - 1), "source": {"tag": f"v1.{i}.0"},
                      "tags": [f"v1.{i}.0", f"git-sha-{i:040x}"[:48]], "actor": "gitlab-ci",
                      "reason": "pipeline 123456", "created_at": "2026-12-01T10:00:00Z",
                      "policy": "default"}
            current = client.hget(f"tw:env:{repo}", env)
            promotions.commit(record, json.loads(current)["digest"] if current else None,
                              1_796_000_000_000 + i, None)

        tags = TagMap(client)
        events = EventStore(client)
        inbox = Inbox(client)
        audit = AuditStore(client)

        def event(i: int) -> None:  # a pull, as the registry reports it (recorded directly)
            ev = {"id": str(uuid.uuid4()), "timestamp": "2026-12-01T10:00:00.123456789Z",
                  "action": "pull", "repository": repos[i], "tag": "v1.2.3",
                  "digest": _digest(i), "media_type": "application/vnd.oci.image.manifest.v1"
                  "+json", "size": 1234, "actor": "ci-runner-17", "addr": "10.1.2.3",
                  "request_id": uuid.uuid4().hex}
            inbox.accept([ev], events.streams)

        def audited(i: int) -> None:
            audit.record("promotion.create", (f"tok_{i % 50:08x}", "gitlab-ci"),
                         {"repository": repos[i], "environment": "staging", "tag": "v1.2.3"},
                         "success", 201, uuid.uuid4().hex)

        return {
            "promotion record": _per_item(client, n, promote),
            "tag-map entry": _per_item(client, n, lambda i: tags.set(
                repos[i], f"v{i}.0.{i % 10}", _digest(i))),
            "registry event": _per_item(client, n, event),
            "audit entry": _per_item(client, n, audited),
        }
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def sizing(per: dict[str, float]) -> list[tuple[str, float]]:
    """GiB for 1 M promotions, 100 k repositories (20 tags each), 10 M events and audit."""
    gib = 1024 ** 3
    return [("1 M promotions", per["promotion record"] * 1e6 / gib),
            ("100 k repositories x 20 tags", per["tag-map entry"] * 2e6 / gib),
            ("10 M registry events", per["registry event"] * 1e7 / gib),
            ("10 M audit entries", per["audit entry"] * 1e7 / gib)]


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 20_000
    per = measure(n)
    for name, size in per.items():
        print(f"{name:20s} {size:8.0f} bytes")
    for name, size in sizing(per):
        print(f"{name:30s} {size:6.2f} GiB")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main(sys.argv[1:]))
