"""History page latency: GET /api/v1/promotions?repository=&environment=&limit=50 with
1,000,000 records in the (repository, environment) history against the same with 100.

The 100-record history and the newest 1,000 records of the big one are written with the
project's own `PromotionStore.commit`; the 999,000 older ones are bulk-loaded by a Lua script
writing exactly what `commit` writes (the environment, repository and global history streams,
and the record key), so the key layout the API reads is the project's own."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from typing import Any

from bench import load
from bench.config import Config
from bench.harness import annotate, rounds
from bench.report import Row
from bench.stack import BenchStack
from bench.stats import latency_summary, summary

ENV = "develop"
SMALL = "bench/history-small"
BIG = "bench/history-big"
DIGESTS = ("sha256:" + "a" * 64, "sha256:" + "b" * 64)
COMMITTED_TAIL = 1000

# KEYS: 1 environment stream, 2 repository stream, 3 global stream
# ARGV: 1 record key prefix, then per record: stream id, record id, record json.
# Like COMMIT in service/store/promotions.py: the environment stream gets `<created ms>-n`
# ids, the repository and global streams `*`.
BULK = """
local prefix = ARGV[1]
for i = 2, #ARGV, 3 do
  local sid, rid, data = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  redis.call('XADD', KEYS[1], sid, 'd', data)
  redis.call('XADD', KEYS[2], '*', 'd', data)
  redis.call('XADD', KEYS[3], '*', 'd', data)
  redis.call('SET', prefix .. rid, data)
end
return (#ARGV - 1) / 3
"""


def _format_time(ms: int) -> str:
    from service.domain.durations import format_time

    return format_time(datetime.fromtimestamp(ms / 1000, UTC))


def record(repository: str, n: int, ms: int) -> dict[str, Any]:
    """The n-th promotion record of a history (digests alternate, as promotions do)."""
    digest, previous = DIGESTS[n % 2], DIGESTS[(n + 1) % 2]
    tag = f"v1.{n // 1000}.{n % 1000}"
    return {
        "id": f"prm_{ms:012x}{os.urandom(6).hex()}", "kind": "promotion",
        "repository": repository, "environment": ENV, "digest": digest,
        "previous_digest": previous if n else None, "source": {"tag": tag}, "tags": [tag],
        "actor": "ci-bench", "reason": None, "created_at": _format_time(ms), "policy": "bench",
    }


def seed(stack: BenchStack, cfg: Config) -> dict[str, Any]:
    """Write both histories; returns timings and a cursor deep inside the big one."""
    from service.store import key
    from service.store.promotions import PromotionStore

    r = stack.redis()
    r_raw = __import__("redis").Redis(port=stack.redis_proc.port)
    store = PromotionStore(r)
    info: dict[str, Any] = {}
    now = int(time.time() * 1000)

    # the small history: 100 commits through the project's code
    t0 = time.perf_counter()
    expected = None
    for n in range(cfg.history_small):
        rec = record(SMALL, n, now - (cfg.history_small - n) * 1000)
        store.commit(rec, expected, int(now - (cfg.history_small - n) * 1000), None)
        expected = rec["digest"]
    info["small_commit_s"] = round(time.perf_counter() - t0, 2)

    # the big one: bulk older records, then the newest ones through commit()
    big = cfg.history_big
    bulk = big - COMMITTED_TAIL
    start_ms = now - big * 1000 - 10_000
    script = r_raw.register_script(BULK)
    keys = [key("history", "env", BIG, ENV), key("history", "repo", BIG), key("history", "all")]
    prefix = key("promotion", "")
    t0 = time.perf_counter()
    batch = 5000
    middle_id = None
    for first in range(0, bulk, batch):
        args: list[Any] = [prefix]
        for n in range(first, min(first + batch, bulk)):
            ms = start_ms + n * 1000
            rec = record(BIG, n, ms)
            sid = f"{ms}-0"
            if n == bulk // 2:
                middle_id = sid
            args += [sid, rec["id"],
                     json.dumps(rec, separators=(",", ":"), sort_keys=True)]
        script(keys=keys, args=args)
    info["bulk_load_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    expected = None
    for n in range(bulk, big):
        ms = now - (big - n) * 2  # the newest 1,000 within the last 2 s
        rec = record(BIG, n, ms)
        store.commit(rec, expected, ms, None)
        expected = rec["digest"]
    info["tail_commit_s"] = round(time.perf_counter() - t0, 2)
    info["records"] = {SMALL: r.xlen(key("history", "env", SMALL, ENV)),
                       BIG: r.xlen(key("history", "env", BIG, ENV))}
    info["redis_used_memory_mib"] = round(int(r.info("memory")["used_memory"]) / 2**20)
    _quiet_aof(r)
    info["middle_id"] = middle_id
    return info


def _quiet_aof(r: Any, cap: float = 300.0) -> None:
    """Rewrite the AOF now and wait, so no background rewrite (a fork of a multi-GiB Redis)
    lands in the middle of the measurement."""
    try:
        r.bgrewriteaof()
    except Exception:  # noqa: BLE001 - one may already be running
        pass
    deadline = time.monotonic() + cap
    while time.monotonic() < deadline:
        p = r.info("persistence")
        if not p.get("aof_rewrite_in_progress") and not p.get("aof_rewrite_scheduled"):
            return
        time.sleep(0.5)


def run(stack: BenchStack, cfg: Config) -> Row:
    from service.store.pagination import encode_cursor

    t0 = time.perf_counter()
    info = seed(stack, cfg)
    info["seed_total_s"] = round(time.perf_counter() - t0, 1)
    if info["records"][BIG] != cfg.history_big or info["records"][SMALL] != cfg.history_small:
        raise RuntimeError(f"seeding wrote {info['records']}")
    base = "/api/v1/promotions?environment=" + ENV + "&limit=50&repository="
    api = stack.api()
    status, page = api.json("GET", base + BIG)
    if status != 200 or len(page["items"]) != 50 or not page["next_cursor"]:
        raise RuntimeError(f"history page answered {status}: {str(page)[:300]}")
    api.close()
    deep = f"{base}{BIG}&cursor={encode_cursor(info['middle_id'])}"
    per_mode: dict[str, list[dict[str, Any]]] = {"direct": [], "gateway": []}
    duration = max(2.0, cfg.phase_seconds / 2)

    def phase(mode: str, r: int) -> float:
        # "direct" is the 100-record history, "gateway" the 1,000,000-record one
        if mode == "direct":
            paths = [("first", base + SMALL)]
        else:
            paths = [("first", base + BIG), ("deep", deep)]
        args = {"port": stack.gw_port, "auth": stack.api_auth, "paths": paths}
        out = load.run("bench.tasks:history_page", args, 4, duration, warmup=0.5,
                       processes=2)
        if out["errors"]:
            raise RuntimeError(f"{len(out['errors'])} errors, first: {out['errors'][0]}")
        stats = {k: latency_summary(v) for k, v in out["lat"].items()}
        per_mode[mode].append(stats)
        return stats["first"]["p95_ms"]

    res = rounds(stack, cfg, "history", phase)
    ratio = [g / d for g, d in zip(res["gateway"], res["direct"], strict=True)]
    rs = summary(ratio)
    big_label = f"{cfg.history_big:,}"
    row = Row("history", f"history page (50 records) p95 with {big_label} records",
              f"with {cfg.history_small} records", "ms", "≤ 1.2×",
              baseline=summary(res["direct"]), gateway=summary(res["gateway"]),
              headline=f"{rs['median']:.2f}× [{rs['min']:.2f}–{rs['max']:.2f}]",
              headline_value=rs["median"], headline_spread=(rs["min"], rs["max"]),
              met=rs["median"] <= 1.2)
    deep_p95 = [s["deep"]["p95_ms"] for s in per_mode["gateway"] if "deep" in s]
    if deep_p95:
        row.notes.append(f"a page from the middle of the {big_label} (cursor): p95 "
                         f"{summary(deep_p95)['median']:.2f} ms")
    row.notes.append(f"4 clients through the gateway; seeding took {info['seed_total_s']} s "
                     f"(Redis {info['redis_used_memory_mib']} MiB)")
    row.detail = {"per_round": per_mode, "ratios": ratio, "seed": info}
    return annotate(row, res)
