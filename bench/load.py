"""Closed-loop load: N client threads spread over P processes, each on its own keep-alive
connection, issuing requests back to back for a fixed time; latencies are recorded after a
warm-up. Processes (not only threads) keep the client's GIL from becoming the bottleneck or
inflating latencies; they still share the machine's cores with the servers under test.

A task is named "module:factory"; `factory(args, client_index)` returns a callable that makes
one request and returns (label, counters or None). Only stdlib + bench.client are imported
in the load processes.
"""

from __future__ import annotations

import importlib
import multiprocessing
import threading
import time
from collections import defaultdict
from typing import Any

_POOL: Any = None


def pool(processes: int = 2) -> Any:
    """The shared pool of load processes (spawned once, reused by every benchmark)."""
    global _POOL
    if _POOL is None:
        _POOL = multiprocessing.get_context("spawn").Pool(processes)
        _POOL.map(_ping, range(processes))
    return _POOL


def pids() -> list[int]:
    """Process ids of the load processes (for CPU accounting)."""
    if _POOL is None:
        return []
    return [p.pid for p in getattr(_POOL, "_pool", []) if p.pid]


def shutdown() -> None:
    """Stop the load processes."""
    global _POOL
    if _POOL is not None:
        _POOL.terminate()
        _POOL.join()
        _POOL = None


def _ping(_: int) -> int:
    return 0


def _resolve(task: str) -> Any:
    module, _, name = task.partition(":")
    return getattr(importlib.import_module(module), name)


def _process(task: str, args: dict[str, Any], first: int, count: int, start_at: float,
             warmup: float, duration: float) -> dict[str, Any]:
    """One load process: `count` threads with client indexes first..first+count-1."""
    factory = _resolve(task)
    calls = [factory(args, first + i) for i in range(count)]
    record_from = start_at + warmup
    stop_at = record_from + duration
    lat: dict[str, list[float]] = defaultdict(list)
    counters: dict[str, int] = defaultdict(int)
    errors: list[str] = []
    lock = threading.Lock()

    def run(call: Any) -> None:
        mine: dict[str, list[float]] = defaultdict(list)
        mine_counts: dict[str, int] = defaultdict(int)
        err: list[str] = []
        delay = start_at - time.time()
        if delay > 0:
            time.sleep(delay)
        perf = time.perf_counter
        now = time.time
        while True:
            t = now()
            if t >= stop_at:
                break
            t0 = perf()
            try:
                label, extra = call()
            except Exception as exc:  # noqa: BLE001 - counted and reported
                err.append(f"{type(exc).__name__}: {exc}")
                if len(err) > 50:
                    break
                continue
            elapsed = perf() - t0
            if t >= record_from:
                mine[label].append(elapsed)
                if extra:
                    for k, v in extra.items():
                        mine_counts[k] += v
        with lock:
            for k, v in mine.items():
                lat[k].extend(v)
            for k, v in mine_counts.items():
                counters[k] += v
            errors.extend(err)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    closer = getattr(calls[0], "close_all", None) if calls else None
    if closer:
        closer()
    return {"lat": dict(lat), "counters": dict(counters), "errors": errors}


def run(task: str, args: dict[str, Any], clients: int, duration: float, warmup: float = 1.0,
        processes: int = 2) -> dict[str, Any]:
    """Run `clients` closed-loop clients for `duration` s (after `warmup`); merged results:
    {"lat": {label: [seconds]}, "counters", "errors", "duration", "ops"}."""
    processes = max(1, min(processes, clients))
    p = pool(processes)
    per = [clients // processes + (1 if i < clients % processes else 0)
           for i in range(processes)]
    start_at = time.time() + 0.5
    jobs = []
    first = 0
    for count in per:
        jobs.append((task, args, first, count, start_at, warmup, duration))
        first += count
    parts = p.starmap(_process, jobs)
    lat: dict[str, list[float]] = defaultdict(list)
    counters: dict[str, int] = defaultdict(int)
    errors: list[str] = []
    for part in parts:
        for k, v in part["lat"].items():
            lat[k].extend(v)
        for k, v in part["counters"].items():
            counters[k] += v
        errors.extend(part["errors"])
    ops = sum(len(v) for v in lat.values())
    return {"lat": dict(lat), "counters": dict(counters), "errors": errors,
            "duration": duration, "ops": ops}
