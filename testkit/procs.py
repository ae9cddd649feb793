"""Start real redis-server, docker-registry and gunicorn processes for tests and benchmarks
(with mirakuru, through service/ops/executors.py, as `make run` does)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from mirakuru.exceptions import ExecutorError

from service.ops import executors
from service.ops.registry_config import render_nginx_config, render_registry_config

ROOT = Path(__file__).resolve().parents[1]  # the checkout (testkit/procs.py)

WEBHOOK_TOKEN = "test-webhook-token-0123456789"
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, timeout: float = 30.0, status: int = 200) -> None:
    """Block until GET url answers with `status`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == status:
                    return
                last = resp.status
        except urllib.error.HTTPError as exc:
            last = exc.code
            if exc.code == status:
                return
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{url} not answering {status} after {timeout}s (last: {last})")


@dataclass
class Proc:
    """A started process that can be stopped, killed and restarted with the same argv (a
    mirakuru executor underneath; `proc` keeps the Popen of the last start, also once it
    ended, for `pid` and `poll()`)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    port: int
    proc: subprocess.Popen[Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    ready_url: str = ""  # started once GET ready_url answers 200, else once the port accepts
    executor: executors.Supervised | None = field(default=None, repr=False)

    def start(self, wait: bool = True) -> Proc:
        """Start (in its own process group) and wait for the port, or `ready_url`."""
        try:
            self.executor = executors.start(
                self.argv, self.env, self.log, timeout=50.0 if self.ready_url else 20.0,
                port=f"127.0.0.1:{self.port}" if wait else "",
                url=self.ready_url if wait else "")
        except ExecutorError as exc:
            raise RuntimeError(f"{self.name} did not start: {exc}\n{self.log_tail()}") from exc
        self.proc = self.executor.process
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the process group; SIGKILL after `timeout`."""
        if self.executor is not None:
            self.executor.stop_within(timeout, sig)

    def kill(self) -> None:
        """SIGKILL the whole group at once."""
        self.stop(signal.SIGKILL)

    def rss(self) -> int:
        """Resident memory of the process and all its children, in bytes."""
        assert self.proc is not None
        total = 0
        for p in tree(self.proc.pid):
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def log_tail(self, lines: int = 40) -> str:
        """The end of the process log (for failure messages)."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def redis_server(workdir: Path, *, fsync: str = "everysec") -> Proc:
    """A real redis-server with AOF on, data in workdir."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1",
            "--port", str(port), "--dir", str(workdir), "--appendonly", "yes",
            "--appendfsync", fsync, "--save", "", "--protected-mode", "yes"]
    return Proc("redis", argv, dict(os.environ), workdir / "redis.log", port).start()


def registry_server(workdir: Path, webhook_url: str, *, port: int | None = None) -> Proc:
    """A real docker-registry (distribution 2.8) with its notifications sent to webhook_url."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = workdir / "config.yml"
    config.write_text(render_registry_config(
        data_dir=str(workdir / "data"), addr=f"127.0.0.1:{port}", secret="test-registry-secret",
        webhook_url=webhook_url, webhook_token=WEBHOOK_TOKEN,
    ))
    argv = [shutil.which("docker-registry") or "docker-registry", "serve", str(config)]
    return Proc("registry", argv, dict(os.environ), workdir / "registry.log", port,
                ready_url=f"http://127.0.0.1:{port}/v2/").start()


ACCEL_PATH = "/_tagwarden/blobs/"


def nginx_server(workdir: Path, gateway_port: int, storage: Path) -> Proc:
    """nginx in front of a gateway, from `tagwarden nginx-config`'s template (front-proxy
    deployment: blob GETs served from the registry's storage after the gateway's yes)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    text = render_nginx_config(listen=f"127.0.0.1:{port}", gateway=f"127.0.0.1:{gateway_port}",
                               storage=str(storage), run_dir=str(workdir), accel_path=ACCEL_PATH)
    if os.geteuid() == 0:  # workers would drop to nobody, who cannot read the test's tmp dirs
        text = "user root;\n" + text
    config = workdir / "nginx.conf"
    config.write_text(text)
    argv = [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(config), "-p", str(workdir),
            "-g", "daemon off;"]
    return Proc("nginx", argv, dict(os.environ), workdir / "nginx.log", port).start()


def gateway_env(redis_port: int, registry_port: int, **extra: str) -> dict[str, str]:
    """Environment for a gateway or worker talking to the given services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGWARDEN_")}
    env.update({
        "TAGWARDEN_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "TAGWARDEN_REGISTRY_URL": f"http://127.0.0.1:{registry_port}",
        "TAGWARDEN_ADMIN_TOKEN": ADMIN_TOKEN,
        "TAGWARDEN_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "TAGWARDEN_LOG_FORMAT": "text",
    })
    env.update(extra)
    return env


def gateway_server(workdir: Path, env: dict[str, str], *, port: int | None = None,
                   workers: int = 2, threads: int = 16) -> Proc:
    """The real gateway under gunicorn with the repository's gunicorn.conf.py."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    env = dict(env, TAGWARDEN_BIND=f"127.0.0.1:{port}", TAGWARDEN_WORKERS=str(workers),
               TAGWARDEN_THREADS=str(threads))
    argv = [str(Path(sys.executable).parent / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"),
            "service:create_app()"]
    return Proc("gateway", argv, env, workdir / f"gateway-{port}.log", port,
                ready_url=f"http://127.0.0.1:{port}/healthz").start()


def worker_process(workdir: Path, env: dict[str, str], name: str = "worker") -> Proc:
    """A real RQ worker subprocess (`tagwarden worker`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [str(Path(sys.executable).parent / "tagwarden"), "worker"]
    return Proc(name, argv, env, workdir / f"{name}.log", 0).start(wait=False)


def raw_request(port: int, head: str, body_prefix: bytes = b"", timeout: float = 10.0
                ) -> tuple[int, bytes]:
    """Send a request head (and maybe part of a body) on a raw socket; (status, response).
    Used to prove the server answers from the headers alone, without reading the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n" + body_prefix)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head_part, _, rest = data.partition(b"\r\n\r\n")
        status = int(head_part.split(b" ", 2)[1])
        length = 0
        for line in head_part.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, rest


def tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


class PeakRss:
    """Samples a process tree's RSS every 20 ms in a background thread; keeps the peak. The
    list of processes is refreshed every 0.5 s only (walking /proc costs CPU the servers
    being measured would miss)."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        procs_: list[psutil.Process] = []
        refreshed = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - refreshed > 0.5:
                procs_ = tree(self.pid)
                refreshed = now
            total = 0
            for p in procs_:
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    refreshed = 0.0
            self.peak = max(self.peak, total)
            self.samples += 1
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def redis_ha(workdir: Path, *, fsync: str = "everysec") -> tuple[Proc, Proc, list[Proc]]:
    """The `make run-ha` topology on free ports: a primary, a replica and three sentinels
    (master name `tagwarden`, quorum 2), from the same argv builders as the stack."""
    from service.ops.stack import redis_argv, sentinel_argv

    env = dict(os.environ)
    port, replica_port = free_port(), free_port()
    (workdir / "primary").mkdir(parents=True, exist_ok=True)
    (workdir / "replica").mkdir(parents=True, exist_ok=True)
    primary = Proc("redis-primary", redis_argv("127.0.0.1", port, workdir / "primary",
                                               fsync=fsync), env,
                   workdir / "primary" / "redis.log", port).start()
    replica = Proc("redis-replica", redis_argv("127.0.0.1", replica_port, workdir / "replica",
                                               replica_of=f"127.0.0.1:{port}", fsync=fsync),
                   env, workdir / "replica" / "redis.log", replica_port).start()
    sentinels = []
    for i in range(3):
        sport = free_port()
        data = workdir / f"sentinel{i + 1}"
        argv = sentinel_argv("127.0.0.1", sport, data, f"127.0.0.1:{port}")
        sentinels.append(Proc(f"sentinel{i + 1}", argv, env, data / "sentinel.log",
                              sport).start())
    return primary, replica, sentinels
