"""`make run`: Redis, the registry, the gateway and a worker on loopback, supervised together.
`make run-ha`: the same with a Redis primary, a replica and three sentinels, and two workers."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mirakuru.exceptions import ExecutorError

from service.ops import executors
from service.ops.registry_config import render_registry_config

ROOT = Path(__file__).resolve().parents[2]  # the checkout (service/ops/stack.py)


@dataclass
class Child:
    """One supervised process (a mirakuru executor, service/ops/executors.py)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    port: str = ""  # host:port: the next child starts once this one accepts connections
    url: str = ""  # the stack is ready once GET url answers 200 (the gateway's /readyz)
    essential: bool = True  # its death stops the stack (not so for a Redis of `run-ha`)
    executor: executors.Supervised | None = None

    def start(self, abort: Callable[[], str]) -> None:
        """Start in its own process group; return once it is ready (see `port`, `url`)."""
        self.executor = executors.start(self.argv, self.env, self.log, port=self.port,
                                        url=self.url, timeout=60.0 if self.url else 20.0,
                                        abort=abort)

    @property
    def exit_code(self) -> int | None:
        """Its exit status once it has ended; None while it runs (or before it started)."""
        process = self.executor.process if self.executor else None
        return process.poll() if process else None


def _secret_file(data: Path) -> dict[str, str]:
    """Tokens generated once per data dir (kept so a restart keeps working credentials)."""
    path = data / "secrets.env"
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, _, value = line.partition("=")
            values[name] = value
    for name in ("TAGWARDEN_ADMIN_TOKEN", "TAGWARDEN_WEBHOOK_TOKEN", "REGISTRY_HTTP_SECRET"):
        values.setdefault(name, "tw_" + secrets.token_urlsafe(32))
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)
    return values


def _need(binary: str) -> str:
    found = shutil.which(binary)
    if not found:
        sys.exit(f"tagwarden dev: '{binary}' not found; run `make run` (it installs it)")
    return found


def _dead(children: list[Child]) -> str:
    """The started children that have ended, with their exit status ("" when none)."""
    return ", ".join(f"{c.name} (exit {c.exit_code})" for c in children
                     if c.exit_code is not None)


MASTER = "tagwarden"
# Sentinel's verdict: a primary silent this long is down (then a failover takes ~1-2 s more)
DOWN_AFTER_MS = 4000


def redis_argv(host: str, port: int, data: Path, replica_of: str = "",
               fsync: str = "everysec") -> list[str]:
    """A redis-server with AOF on; `replica_of` (host:port) starts it as a replica."""
    argv = [_need("redis-server"), "--bind", host, "--port", str(port), "--dir", str(data),
            "--appendonly", "yes", "--appendfsync", fsync, "--save", "",
            "--protected-mode", "yes"]
    if replica_of:
        argv += ["--replicaof", *replica_of.split(":")]
    return argv


def sentinel_argv(host: str, port: int, data: Path, primary: str,
                  down_after_ms: int = DOWN_AFTER_MS) -> list[str]:
    """A sentinel (`redis-server --sentinel`: no extra package) watching `primary` as MASTER,
    quorum 2 of 3. Sentinel rewrites its config file, so each has its own in `data`."""
    data.mkdir(parents=True, exist_ok=True)
    phost, _, pport = primary.rpartition(":")
    config = data / "sentinel.conf"
    config.write_text("\n".join([
        f"bind {host}", f"port {port}", f"dir {data}",
        f"sentinel monitor {MASTER} {phost} {pport} 2",
        f"sentinel down-after-milliseconds {MASTER} {down_after_ms}",
        f"sentinel failover-timeout {MASTER} 20000",
        f"sentinel parallel-syncs {MASTER} 1", ""]))
    return [_need("redis-server"), str(config), "--sentinel"]


def build_children(data: Path, ha: bool = False) -> tuple[list[Child], dict[str, str]]:
    """The processes of the stack, in the order they start, with their configuration: the
    gateway last, so that its readiness is the stack's."""
    bind = os.environ.get("TAGWARDEN_BIND", "127.0.0.1:8080")
    redis_addr = os.environ.get("TAGWARDEN_REDIS_ADDR", "127.0.0.1:6380")
    registry_addr = os.environ.get("TAGWARDEN_REGISTRY_ADDR", "127.0.0.1:5000")
    tokens = _secret_file(data)
    env = dict(os.environ)  # every TAGWARDEN_* the user set reaches gateway and worker
    env.setdefault("TAGWARDEN_ADMIN_TOKEN", tokens["TAGWARDEN_ADMIN_TOKEN"])
    env.setdefault("TAGWARDEN_WEBHOOK_TOKEN", tokens["TAGWARDEN_WEBHOOK_TOKEN"])
    env.setdefault("TAGWARDEN_REDIS_URL", f"redis://{redis_addr}/0")
    env.setdefault("TAGWARDEN_REGISTRY_URL", f"http://{registry_addr}")
    env["TAGWARDEN_BIND"] = bind
    # the gateway reads the registry's storage: blob GETs with sendfile, manifests cached
    env.setdefault("TAGWARDEN_REGISTRY_STORAGE", str((data / "registry").resolve()))
    # gateway and worker write their metrics to one directory, so /metrics shows jobs too
    metrics_dir = data / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir()
    env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    (data / "redis").mkdir(exist_ok=True)
    (data / "registry").mkdir(exist_ok=True)
    (data / "logs").mkdir(exist_ok=True)
    config = data / "registry.yml"
    config.write_text(
        render_registry_config(
            data_dir=str(data / "registry"),
            addr=registry_addr,
            secret=tokens["REGISTRY_HTTP_SECRET"],
            webhook_url=f"http://{bind}/api/v1/webhooks/registry",
            webhook_token=env["TAGWARDEN_WEBHOOK_TOKEN"],
        )
    )
    config.chmod(0o600)
    rhost, _, rport = redis_addr.rpartition(":")
    bin_dir = Path(sys.executable).parent
    logs = data / "logs"
    children = [Child("redis", redis_argv(rhost, int(rport), data / "redis"), env,
                      logs / "redis.log", redis_addr, essential=not ha)]
    if ha:
        children += ha_children(env, data, rhost, int(rport))
    children.append(Child("registry", [_need("docker-registry"), "serve", str(config)], env,
                          logs / "registry.log", registry_addr))
    for name in ("worker", "worker2") if ha else ("worker",):
        children.append(Child(name, [str(bin_dir / "tagwarden"), "worker"], env,
                              logs / f"{name}.log"))
    children.append(Child("gateway", [str(bin_dir / "gunicorn"), "-c",
                                      str(ROOT / "gunicorn.conf.py"), "service:create_app()"],
                          env, logs / "gateway.log", url=f"http://{bind}/readyz"))
    return children, env


SAMPLE_TOKEN = "TAGWARDEN_SAMPLE_CI_TOKEN"
REPLICA_SYNC_WAIT = 30.0  # seconds


def _api(env: dict[str, str], method: str, path: str, token: str,
         body: dict[str, object] | None = None) -> tuple[int, dict[str, object]]:
    """(status, JSON answer) of one call to the gateway the stack runs."""
    req = urllib.request.Request(
        f"http://{env['TAGWARDEN_BIND']}{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def sample_ci_token(env: dict[str, str], data: Path) -> str:
    """A `ci` token for the banner's sample push (team/*), made once per data dir and kept in
    secrets.env; made again when it no longer works (revoked, or Redis emptied)."""
    values = _secret_file(data)
    known = values.get(SAMPLE_TOKEN, "")
    if known and _api(env, "GET", "/api/v1/vulndb", known)[0] == 200:
        return known
    # `run-ha` (TAGWARDEN_REDIS_MIN_REPLICAS=1): writes are refused with a 503 until the replica
    # is in sync, which Redis starts only after repl-diskless-sync-delay (5 s) from the replica's
    # first request, later than the gateway is ready
    deadline = time.monotonic() + REPLICA_SYNC_WAIT
    while True:
        status, answer = _api(env, "POST", "/api/v1/tokens", env["TAGWARDEN_ADMIN_TOKEN"], {
            "name": f"make-run-sample-push-{secrets.token_hex(3)}", "role": "ci",
            "repositories": ["team/*"]})
        if status != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if status != 201:
        raise RuntimeError(f"could not create the sample ci token (HTTP {status})")
    values[SAMPLE_TOKEN] = str(answer["token"])
    path = data / "secrets.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return values[SAMPLE_TOKEN]


def write_stack_env(env: dict[str, str], data: Path) -> Path:
    """`.data/stack.env`: where the stack listens, for shells (`set -a; . .data/stack.env`),
    the CLI and `rq info`; no secrets (those are in secrets.env)."""
    path = data / "stack.env"
    path.write_text(f"TAGWARDEN_URL=http://{env['TAGWARDEN_BIND']}\n"
                    f"TAGWARDEN_REDIS_URL={env['TAGWARDEN_REDIS_URL']}\n"
                    f"TAGWARDEN_REGISTRY_URL={env['TAGWARDEN_REGISTRY_URL']}\n"
                    f"TAGWARDEN_QUEUE={env.get('TAGWARDEN_QUEUE', 'tagwarden')}\n")
    return path


def ha_children(env: dict[str, str], data: Path, host: str, port: int) -> list[Child]:
    """A replica on port+1 and three sentinels on 26380-26382 (TAGWARDEN_SENTINEL_PORT: the
    first); every Tagwarden process finds the primary through them."""
    first = int(os.environ.get("TAGWARDEN_SENTINEL_PORT", "26380"))
    sentinels = [f"{host}:{first + i}" for i in range(3)]
    env["TAGWARDEN_REDIS_SENTINELS"] = ",".join(sentinels)
    env.setdefault("TAGWARDEN_REDIS_SENTINEL_MASTER", MASTER)
    env.setdefault("TAGWARDEN_REDIS_MIN_REPLICAS", "1")
    # a scheduler lost in a failover is restarted within this (README, Guarantees)
    env.setdefault("TAGWARDEN_WORKER_MAINTENANCE_INTERVAL", "10")
    (data / "redis-replica").mkdir(exist_ok=True)
    logs = data / "logs"
    children = [Child("redis-replica", redis_argv(host, port + 1, data / "redis-replica",
                                                  replica_of=f"{host}:{port}"),
                      env, logs / "redis-replica.log", f"{host}:{port + 1}", essential=False)]
    for i, addr in enumerate(sentinels):
        children.append(Child(f"sentinel{i + 1}", sentinel_argv(
            host, first + i, data / f"sentinel{i + 1}", f"{host}:{port}"), env,
            logs / f"sentinel{i + 1}.log", addr, essential=False))
    return children


def banner(env: dict[str, str], data: Path, ci_token: str) -> str:
    """What a newcomer needs to start pushing."""
    bind = env["TAGWARDEN_BIND"]
    queue = env.get("TAGWARDEN_QUEUE", "tagwarden")
    sentinels = (f"   (found through sentinels {env['TAGWARDEN_REDIS_SENTINELS']}, master "
                 f"{env.get('TAGWARDEN_REDIS_SENTINEL_MASTER', MASTER)})"
                 if env.get("TAGWARDEN_REDIS_SENTINELS") else "")
    return f"""
Tagwarden is up.
  gateway   http://{bind}   (docs: http://{bind}/docs, readiness: http://{bind}/readyz)
  registry  {env['TAGWARDEN_REGISTRY_URL']}   (upstream; push and pull through the gateway)
  redis     {env['TAGWARDEN_REDIS_URL']}{sentinels}
  jobs      rq info -u {env['TAGWARDEN_REDIS_URL']} {queue}
  data      {data}   logs in {data / 'logs'}, addresses in {data / 'stack.env'}
  admin token: {env['TAGWARDEN_ADMIN_TOKEN']}

Use the CLI (tagwarden promote, scan, vulndb import, ...) from another shell:
  export TAGWARDEN_URL=http://{bind} TAGWARDEN_TOKEN={env['TAGWARDEN_ADMIN_TOKEN']}

Push an image through the gateway (a `ci` token made for this, for team/*):
  skopeo copy --dest-tls-verify=false --dest-creds ci:{ci_token} \\
      docker-archive:image.tar docker://{bind}/team/app:v1.0.0

Ctrl-C stops everything.
"""


def run(ha: bool = False) -> int:
    """Start the stack, supervise it, stop it all on Ctrl-C or when any process dies."""
    default = ROOT / (".data-ha" if ha else ".data")
    data = Path(os.environ.get("TAGWARDEN_DATA_DIR", default)).resolve()
    data.mkdir(parents=True, exist_ok=True)
    children, env = build_children(data, ha)
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    for child in children:
        try:
            child.start(abort=lambda: _dead(children))
        except ExecutorError as exc:
            shutdown(children)
            if child.url:
                print(f"tagwarden dev: stack not ready ({exc}); see {data / 'logs'}",
                      file=sys.stderr)
            else:
                print(f"tagwarden dev: {child.name} did not start ({exc}); see {child.log}",
                      file=sys.stderr)
            return 1
    code = 0
    try:
        write_stack_env(env, data)
        try:
            ci_token = sample_ci_token(env, data)
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            print(f"tagwarden dev: {exc}", file=sys.stderr)
            return 1
        print(banner(env, data, ci_token), flush=True)
        reported: set[str] = set()
        while not stopping:
            for c in children:
                if not c.essential and c.exit_code is not None and c.name not in reported:
                    reported.add(c.name)
                    print(f"tagwarden dev: {c.name} died (exit {c.exit_code}); the "
                          "sentinels fail over, the stack goes on", file=sys.stderr)
            dead = _dead([c for c in children if c.essential])
            if dead:
                print(f"tagwarden dev: {dead} died; stopping the whole stack "
                      f"(see {data / 'logs'})", file=sys.stderr)
                code = 1
                break
            time.sleep(0.5)
    finally:
        shutdown(children)
    return code


def shutdown(children: list[Child]) -> None:
    """Stop in reverse order (the gateway first, Redis last), SIGKILL what lingers past 10 s."""
    for child in reversed(children):
        if child.executor:
            child.executor.stop_within(10.0)
    print("tagwarden dev: stopped.", file=sys.stderr)
