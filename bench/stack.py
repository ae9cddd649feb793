"""The benchmark stack: a real redis-server, docker-registry (notifying the gateway, as
deployed), the gateway under gunicorn with the repository's gunicorn.conf.py, and an RQ worker.
Started with testkit.procs, like the integration tests."""

from __future__ import annotations

import os
import runpy
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis

from bench.client import Http, basic, bearer
from testkit import procs
from testkit.procs import PeakRss, tree  # noqa: F401 - used by the bench modules

ROOT = Path(__file__).resolve().parents[1]
# The per-token API rate limit (default 1200/minute) would cap every API benchmark at 20/s;
# the bench raises it (the limiter still runs, so its Redis round trip is still measured).
BENCH_ENV = {
    "TAGWARDEN_RATE_LIMIT": "100000000/minute",
    "TAGWARDEN_LOG_FORMAT": "json",  # the production default (procs picks text for tests)
    "TAGWARDEN_OUTBOUND_ALLOWLIST": "127.0.0.1",
    # the front-proxy deployment's setting; it only changes requests that come through nginx
    "TAGWARDEN_BLOB_ACCEL_PATH": procs.ACCEL_PATH,
}


def gunicorn_defaults() -> tuple[int, int]:
    """(workers, threads) that gunicorn.conf.py gives when no TAGWARDEN_* override is set."""
    conf = gunicorn_conf()
    return int(conf["workers"]), int(conf["threads"])


def gunicorn_conf() -> dict:
    """gunicorn.conf.py's settings as the gateway reads them without TAGWARDEN_* overrides."""
    saved = {k: os.environ.pop(k) for k in ("TAGWARDEN_WORKERS", "TAGWARDEN_THREADS")
             if k in os.environ}
    try:
        conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    finally:
        os.environ.update(saved)
    return {k: v for k, v in conf.items() if not k.startswith("_") and not callable(v)
            and isinstance(v, str | int | float | bool | type(None))}


def rss_of(pid: int) -> int:
    """Resident memory of a process tree, bytes."""
    total = 0
    for p in tree(pid):
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def cpu_seconds(pids: list[int]) -> float:
    """User+system CPU seconds used so far by these process trees: the live processes, plus
    children that already exited and were reaped (RQ's forked job processes, for instance)."""
    total = 0.0
    for pid in pids:
        for p in tree(pid):
            try:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                pass
    return total


def machine_busy() -> float:
    """Machine-wide busy CPU seconds (all cores, everything but idle and iowait)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


@dataclass
class BenchStack:
    """The running services and how to talk to them."""

    workdir: Path
    redis_proc: procs.Proc
    registry: procs.Proc  # behind the gateway, notifying it (as deployed)
    bare: procs.Proc  # the same storage, no notifications: the "direct" baseline
    gateway: procs.Proc
    worker: procs.Proc | None
    env: dict[str, str]
    workers: int
    threads: int
    keep: bool = False
    # a second gateway whose upstream is the bare registry: the gateway's own cost without
    # the registry→gateway→worker notification traffic (a diagnostic, started on demand)
    gateway_quiet: procs.Proc | None = None
    # nginx from `tagwarden nginx-config` in front of the gateway (the front-proxy
    # deployment: blob GETs authorized by the gateway, served by nginx; started on demand)
    front: procs.Proc | None = None

    # -- addresses and clients --------------------------------------------------------------
    @property
    def reg_port(self) -> int:
        """The bare registry (the baseline every ratio is taken against)."""
        return self.bare.port

    @property
    def gw_port(self) -> int:
        return self.gateway.port

    def port(self, mode: str) -> int:
        """The port of `direct` (the bare registry), `gateway`, `gateway-quiet`, or `front`."""
        if mode == "direct":
            return self.reg_port
        if mode == "gateway-quiet":
            return self.quiet_gateway().port
        if mode == "front":
            return self.front_proxy().port
        return self.gw_port

    def front_proxy(self) -> procs.Proc:
        """Start (once) nginx in front of the gateway, configured as `tagwarden nginx-config`
        renders it, reading the deployed registry's storage."""
        if self.front is None:
            self.front = procs.nginx_server(self.workdir / "nginx", self.gateway.port,
                                            self.workdir / "registry" / "data")
        return self.front

    def quiet_gateway(self) -> procs.Proc:
        """Start (once) a second gateway in front of the bare registry, so nothing notifies
        it: same code, config and Redis, no webhook traffic."""
        if self.gateway_quiet is None:
            env = procs.gateway_env(self.redis_proc.port, self.bare.port, **{
                **BENCH_ENV, "TAGWARDEN_REGISTRY_STORAGE": self.env.get(
                    "TAGWARDEN_REGISTRY_STORAGE", "")})
            self.gateway_quiet = procs.gateway_server(self.workdir / "gateway-quiet", env,
                                                      workers=self.workers,
                                                      threads=self.threads)
        return self.gateway_quiet

    @property
    def v2_auth(self) -> str:
        return basic(procs.ADMIN_TOKEN)

    @property
    def api_auth(self) -> str:
        return bearer(procs.ADMIN_TOKEN)

    @property
    def webhook_auth(self) -> str:
        return bearer(procs.WEBHOOK_TOKEN)

    def v2(self, mode: str, timeout: float = 600.0) -> Http:
        """A /v2 connection to the registry (no auth) or the gateway (Basic)."""
        return Http(self.port(mode), None if mode == "direct" else self.v2_auth, timeout)

    def v2_auth_for(self, mode: str) -> str | None:
        return None if mode == "direct" else self.v2_auth

    def api(self) -> Http:
        return Http(self.gw_port, self.api_auth, 60.0)

    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.redis_proc.port, decode_responses=True)

    def pids(self) -> dict[str, int]:
        out = {"redis": self.redis_proc.pid, "registry": self.registry.pid,
               "bare_registry": self.bare.pid, "gateway": self.gateway.pid}
        if self.worker is not None:
            out["worker"] = self.worker.pid
        if self.gateway_quiet is not None:
            out["gateway_quiet"] = self.gateway_quiet.pid
        if self.front is not None:
            out["nginx"] = self.front.pid
        return out

    def gateway_rss(self) -> int:
        return rss_of(self.gateway.pid)

    # -- quiet between phases ---------------------------------------------------------------
    def settle(self, threshold: float = 0.08, window: float = 0.4, cap: float = 30.0,
               foreign_max: float = 0.3, foreign_cap: float = 5.0) -> float:
        """Wait until the stack is idle (all its processes together use less than
        `threshold` of one core over `window` s), so the registry's notifications and the
        worker's jobs of one phase do not run into the next; then wait (at most
        `foreign_cap` s) for other jobs on the machine to use less than `foreign_max` cores.
        Returns seconds waited."""
        started = time.monotonic()
        pids = list(self.pids().values())

        def ours() -> float:  # the stack, this process, the load processes
            from bench import load

            own = psutil.Process().cpu_times()
            return cpu_seconds(pids) + cpu_seconds(load.pids()) + own.user + own.system
        while time.monotonic() - started < cap:
            before = cpu_seconds(pids)
            time.sleep(window)
            if (cpu_seconds(pids) - before) / window < threshold:
                break
        quiet_from = time.monotonic()
        while time.monotonic() - quiet_from < foreign_cap:
            mine, busy = ours(), machine_busy()
            time.sleep(window)
            foreign = (machine_busy() - busy) - (ours() - mine)
            if foreign / window < foreign_max:
                break
        return time.monotonic() - started

    def stop(self) -> None:
        for proc in (self.front, self.worker, self.gateway_quiet, self.gateway, self.registry,
                     self.bare, self.redis_proc):
            if proc is not None:
                proc.stop()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def start(workdir: Path | None = None, *, workers: int | None = None,
          threads: int | None = None, worker: bool = True, keep: bool = False,
          extra_env: dict[str, str] | None = None) -> BenchStack:
    """Start Redis, the registry (notifications → gateway), the gateway and a worker."""
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="tagwarden-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    d_workers, d_threads = gunicorn_defaults()
    workers = workers or d_workers
    threads = threads or d_threads
    redis_proc = procs.redis_server(workdir / "redis")
    gw_port = procs.free_port()
    registry = procs.registry_server(
        workdir / "registry", f"http://127.0.0.1:{gw_port}/api/v1/webhooks/registry")
    bare = bare_registry(workdir / "registry")
    env = procs.gateway_env(redis_proc.port, registry.port, **{
        **BENCH_ENV, "TAGWARDEN_REGISTRY_STORAGE": str(workdir / "registry" / "data"),
        **(extra_env or {})})
    gateway = procs.gateway_server(workdir / "gateway", env, port=gw_port, workers=workers,
                                   threads=threads)
    worker_proc = procs.worker_process(workdir / "worker", env) if worker else None
    return BenchStack(workdir, redis_proc, registry, bare, gateway, worker_proc, env, workers,
                      threads, keep)


def bare_registry(registry_dir: Path) -> procs.Proc:
    """A second docker-registry on the same storage as the deployed one, with the same
    configuration minus `notifications`: the bare registry the gateway is compared with
    (a registry without Tagwarden notifies nobody)."""
    deployed = (registry_dir / "config.yml").read_text()
    text = deployed.split("\nnotifications:", 1)[0] + "\n"
    port = procs.free_port()
    addr = next(line for line in text.splitlines() if line.strip().startswith("addr:"))
    text = text.replace(addr, addr.split("addr:")[0] + f"addr: 127.0.0.1:{port}")
    config = registry_dir / "config-bare.yml"
    config.write_text(text)
    argv = [shutil.which("docker-registry") or "docker-registry", "serve", str(config)]
    proc = procs.Proc("registry-bare", argv, dict(os.environ), registry_dir / "bare.log",
                      port).start()
    procs.wait_http(f"http://127.0.0.1:{port}/v2/")
    return proc
