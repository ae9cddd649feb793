"""`python -m bench.backup [RECORDS] [REPOSITORIES]`: backup and restore time for a store of
RECORDS promotion records (default 1,000,000 over 1,000 repositories x 3 environments).

A real redis-server (AOF everysec, as `make run`), registry and gateway (gunicorn, 2 workers);
the history is written in the layout the promotion commit leaves (records, the three history
streams, pointers, first-reached times) through the restore writer, then:
1. `GET /api/v1/backup` streamed to a file (the gateway's peak RSS sampled: nothing whole in
   memory);
2. `FLUSHALL`, then `POST /api/v1/restore` of that file (validated line by line into a spool,
   then loaded);
and the restored history is compared with the original (record count, stream ids, pointers).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import requests

from service.store import key
from service.store.backup import RestoreWriter
from testkit import procs

DIGESTS = [f"sha256:{i:064x}" for i in range(1, 41)]


def _record(n: int, repository: str, environment: str, created_ms: int) -> dict:
    """A promotion record of realistic size (~600 bytes as JSON)."""
    digest = DIGESTS[n % len(DIGESTS)]
    created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created_ms / 1000))
    return {"id": f"prm_{created_ms:012x}{n:012x}", "kind": "promotion",
            "repository": repository, "environment": environment, "digest": digest,
            "previous_digest": DIGESTS[(n + 1) % len(DIGESTS)],
            "source": {"tag": f"v1.{n % 97}.{n % 13}"},
            "tags": [f"v1.{n % 97}.{n % 13}", f"git-sha-{n:07x}abcdef"],
            "actor": "ci-pipeline-release", "reason": f"release train {n // 1000}",
            "created_at": f"{created}.{created_ms % 1000:03d}Z", "policy": "team-default",
            "approvals": [], "idempotency_key": f"gitlab-{n}-promote"}


def populate(port: int, records: int, repositories: int) -> None:
    """`records` promotion records in the commit's layout (pointers: each environment's last)."""
    import redis

    writer = RestoreWriter(redis.Redis(port=port, decode_responses=True), batch=3000)
    start = int(time.time() * 1000) - records * 10
    last: dict[tuple[str, str], dict] = {}
    for n in range(records):
        repository = f"team-{n % repositories:04d}/app"
        environment = ("develop", "staging", "production")[(n // repositories) % 3]
        record = _record(n, repository, environment, start + n * 10)
        writer.promotion(f"{start + n * 10}-0", record)
        last[(repository, environment)] = record
    for (repository, environment), record in last.items():
        writer.pointer(repository, environment, {
            "digest": record["digest"], "promotion_id": record["id"],
            "promoted_at": record["created_at"], "tags": record["tags"]})
    writer.flush()


def main(records: int = 1_000_000, repositories: int = 1000) -> dict:
    """Run the measurement; one JSON line of figures."""
    work = Path(tempfile.mkdtemp(prefix="tw-bench-backup-"))
    redis_proc = procs.redis_server(work / "redis")
    gw_port = procs.free_port()
    registry = procs.registry_server(work / "registry",
                                     f"http://127.0.0.1:{gw_port}/api/v1/webhooks/registry")
    env = procs.gateway_env(redis_proc.port, registry.port, TAGWARDEN_RATE_LIMIT="off",
                            TAGWARDEN_RESTORE_SPOOL_DIR=str(work))
    gateway = procs.gateway_server(work / "gateway", env, port=gw_port)
    admin = {"Authorization": f"Bearer {procs.ADMIN_TOKEN}"}
    url = f"http://127.0.0.1:{gw_port}/api/v1"
    try:
        import redis

        client = redis.Redis(port=redis_proc.port, decode_responses=True)
        t0 = time.monotonic()
        populate(redis_proc.port, records, repositories)
        populate_s = time.monotonic() - t0
        used = int(client.info("memory")["used_memory"])
        ids = client.xrange(key("history", "all"), count=5) + client.xrevrange(
            key("history", "all"), count=5)
        pointer = client.hgetall(key("env", "team-0007/app"))
        backup = work / "backup.ndjson"
        t0 = time.monotonic()
        with procs.PeakRss(gateway.pid) as backup_rss, requests.get(
                f"{url}/backup", headers=admin, stream=True, timeout=3600) as resp:
            resp.raise_for_status()
            with backup.open("wb") as out:
                for chunk in resp.iter_content(1024 * 1024):
                    out.write(chunk)
        backup_s = time.monotonic() - t0
        size = backup.stat().st_size
        client.flushall()
        t0 = time.monotonic()
        with procs.PeakRss(gateway.pid) as restore_rss, backup.open("rb") as body:
            done = requests.post(f"{url}/restore", data=body, headers={
                **admin, "Content-Type": "application/x-ndjson"}, timeout=7200)
        restore_s = time.monotonic() - t0
        assert done.status_code == 201, done.text[:500]
        assert done.json()["restored"]["promotion"] == records
        assert client.xlen(key("history", "all")) == records
        assert client.xrange(key("history", "all"), count=5) + client.xrevrange(
            key("history", "all"), count=5) == ids
        assert client.hgetall(key("env", "team-0007/app")) == pointer
        figures = {"records": records, "repositories": repositories,
                   "redis_used_mib": round(used / 2**20), "populate_s": round(populate_s, 1),
                   "backup_s": round(backup_s, 1), "backup_mib": round(size / 2**20),
                   "backup_records_per_s": round(records / backup_s),
                   "restore_s": round(restore_s, 1),
                   "restore_records_per_s": round(records / restore_s),
                   "gateway_peak_rss_mib_backup": round(backup_rss.peak / 2**20),
                   "gateway_peak_rss_mib_restore": round(restore_rss.peak / 2**20),
                   "cpus": os.cpu_count()}
        print(json.dumps(figures))
        return figures
    finally:
        for proc in (gateway, registry, redis_proc):
            proc.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    main(*args)
