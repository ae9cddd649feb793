"""The image built from this checkout, run as docker-compose.yml runs it (issue 23).

No container engine is needed: buildah builds the Dockerfile against a stand-in for
python:3.11-slim-bookworm made from Debian's packages (tests/container/base-image.sh), and runs
containers of the image with `--isolation chroot` and the host's network. A gateway container
(the image's own CMD) and a worker container (compose's `command`), both as the image's user and
with compose's environment (service names replaced by the test stack's loopback ports), serve a
push through skopeo, promotions to production and a scan the worker completes; the image's
HEALTHCHECK and compose's health checks pass inside the containers.

What only a real engine proves (read-only root filesystem, dropped capabilities, compose's
networks and `init`) is listed in the README's "Testing the image".

Needs root (debootstrap, buildah): `make image-test` installs what is missing and runs this.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil
import pytest
import requests
import yaml
from redis import Redis
from rq import Worker

from testkit import oci, procs
from testkit import scan_fixtures as fixtures

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
BASE_SCRIPT = Path(__file__).with_name("base-image.sh")
BASE_LABEL = "org.tagwarden.test.base-script-sha256"
# what tests/container/base-image.sh stands in for
STAND_IN_FOR = "python:3.11-slim-bookworm"
RUN_ID = f"{os.getpid()}-{int(time.time())}"
IMAGE = f"localhost/tagwarden:image-test-{RUN_ID}"
QUEUE = f"image-test-{RUN_ID}"
CI_CREDS = f"ci:{procs.ADMIN_TOKEN}"
HTTP_SECRET = "image-test-registry-http-secret-0123456789"
REPOSITORY = "image-test/app"


# ----------------------------------------------------------------------------- buildah


def buildah(*args: str, timeout: float = 120, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "BUILDAH_ISOLATION": "chroot"}, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"buildah {' '.join(args)} exited {done.returncode}:\n"
                             f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return done


@dataclass
class Container:
    """A buildah working container of the image. Its environment is set once with
    `buildah config`, so every process run in it sees it (as `docker exec` would)."""

    name: str

    @classmethod
    def of(cls, image: str, role: str, env: dict[str, str]) -> Container:
        name = f"tw-image-test-{role}-{RUN_ID}"
        buildah("from", "--pull-never", "--name", name, image)
        cid = buildah("inspect", "--type", "container", "--format", "{{.ContainerID}}",
                      name).stdout.strip()
        # its own hostname, as an engine gives each container (buildah's default is one per
        # image): the worker's health check looks for a worker registered from this host
        buildah("config", f"--hostname={cid[:12]}",
                *(f"--env={k}={v}" for k, v in env.items()), name)
        return cls(name)

    def argv(self, command: list[str], *, env: dict[str, str] | None = None) -> list[str]:
        """`buildah run` of command, as the image's USER, in the image's WORKDIR, on the
        host's network (compose's user and workdir: compose overrides neither)."""
        extra = [f"--env={k}={v}" for k, v in (env or {}).items()]
        return ["buildah", "run", "--isolation", "chroot", "--network", "host", *extra,
                self.name, "--", *command]

    def run(self, command: list[str], *, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(command, env=env), capture_output=True, text=True,
                              timeout=timeout, check=False)

    def process(self, role: str, command: list[str], log: Path, port: int) -> procs.Proc:
        return procs.Proc(f"image-{role}", self.argv(command), dict(os.environ), log, port)

    def remove(self) -> None:
        buildah("rm", self.name, check=False)


# ----------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def _env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` / `${VAR}` as an unset VAR gives (no deploy-time override)."""
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


def _image_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run the Tagwarden image (those that can build it)."""
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def _container_port(gateway: dict[str, Any]) -> int:
    (published,) = gateway["ports"]
    return int(str(published).rpartition(":")[2].partition("/")[0])


def _deploy_env() -> dict[str, str]:
    """deploy.env as an operator fills it in (the example's keys, generated values)."""
    keys = [line.partition("=")[0].strip()
            for line in (ROOT / "deploy.env.example").read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    values = {"TAGWARDEN_ADMIN_TOKEN": procs.ADMIN_TOKEN,
              "TAGWARDEN_WEBHOOK_TOKEN": procs.WEBHOOK_TOKEN,
              "REGISTRY_HTTP_SECRET": HTTP_SECRET}
    assert set(keys) == set(values), keys
    return values


def service_env(svc: dict[str, Any], addresses: dict[str, tuple[str, int]],
                bind: str | None = None) -> dict[str, str]:
    """A compose service's environment (plus deploy.env) for a container on the host's
    network: the service names in URLs (redis:6379, registry:5000) become where the test
    stack listens, TAGWARDEN_BIND the gateway's test port. Nothing else changes."""
    env = {k: _interpolate(v) for k, v in _env(svc).items()}
    for key, value in env.items():
        parts = urlsplit(value)
        if parts.scheme in ("http", "https", "redis") and parts.hostname:
            assert parts.hostname in addresses, (key, value, "a host that is no service")
            host, port = addresses[parts.hostname]
            env[key] = urlunsplit(parts._replace(netloc=f"{host}:{port}"))
    if "TAGWARDEN_BIND" in env:
        assert bind is not None
        env["TAGWARDEN_BIND"] = bind
    if "deploy.env" in (svc.get("env_file") or []) or svc.get("env_file") == "deploy.env":
        env.update(_deploy_env())
    return env


# ----------------------------------------------------------------------------- image


def _dockerfile_bases() -> set[str]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    return {m.group(1) for m in re.finditer(r"^FROM\s+(?:--\S+\s+)*(\S+)", text, re.M)
            if "/" in m.group(1) or ":" in m.group(1)}


def _full_name(image: str) -> str:
    """Docker's short-name rule: python:3.11 is docker.io/library/python:3.11."""
    first = image.split("/")[0]
    if "/" not in image:
        return f"docker.io/library/{image}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{image}"
    return image


def _ensure_base(timings: dict[str, float]) -> str:
    """The stand-in base under the name the Dockerfile's FROM resolves to; rebuilt when
    missing or made by another version of base-image.sh."""
    bases = _dockerfile_bases()
    assert bases == {STAND_IN_FOR}, (
        f"the Dockerfile's base is {bases}; tests/container/base-image.sh stands in for "
        f"{STAND_IN_FOR}: make it build the new base, then update STAND_IN_FOR")
    name = _full_name(STAND_IN_FOR)
    want = hashlib.sha256(BASE_SCRIPT.read_bytes()).hexdigest()
    found = buildah("inspect", "--type", "image", name, check=False)
    if found.returncode == 0:
        labels = json.loads(found.stdout)["OCIv1"]["config"].get("Labels") or {}
        if labels.get(BASE_LABEL) == want:
            timings["stand-in base (reused)"] = 0.0
            return name
    started = time.monotonic()
    done = subprocess.run(["bash", str(BASE_SCRIPT), name], capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, f"base-image.sh failed:\n{done.stdout}\n{done.stderr}"
    timings["stand-in base (debootstrap)"] = time.monotonic() - started
    return name


def _revision() -> str:
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


@dataclass
class Image:
    name: str
    config: dict[str, Any]  # the Docker-format config: User, Cmd, Env, Healthcheck, ...
    revision: str

    @property
    def env(self) -> dict[str, str]:
        return dict(item.partition("=")[::2] for item in self.config.get("Env") or [])


@pytest.fixture(scope="module")
def image(timings: dict[str, float]) -> Iterator[Image]:
    """The image built from the checkout (Docker format, so HEALTHCHECK is kept)."""
    if os.geteuid() != 0:
        pytest.fail("the image test needs root (debootstrap, buildah); run `make image-test` "
                    "as root")
    for tool in ("buildah", "debootstrap", "skopeo", "redis-server", "docker-registry"):
        assert shutil.which(tool), f"{tool} is missing: `make image-test` installs it"
    _ensure_base(timings)
    revision = _revision()
    started = time.monotonic()
    buildah("bud", "--isolation", "chroot", "--pull-never", "--format", "docker", "--quiet",
            "--build-arg", f"REVISION={revision}",
            "--build-arg", f"CREATED={datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}",
            "--file", str(ROOT / "Dockerfile"), "--tag", IMAGE, str(ROOT), timeout=900)
    timings["image build (buildah bud)"] = time.monotonic() - started
    config = json.loads(buildah("inspect", "--type", "image", IMAGE).stdout)["Docker"]["config"]
    try:
        yield Image(IMAGE, config, revision)
    finally:
        buildah("rmi", IMAGE, check=False)


# ----------------------------------------------------------------------------- the stack


@dataclass
class ImageStack:
    redis: procs.Proc
    registry: procs.Proc
    gateway: procs.Proc
    worker: procs.Proc
    gateway_ctr: Container
    worker_ctr: Container

    @property
    def gw(self) -> str:
        return f"127.0.0.1:{self.gateway.port}"

    @property
    def url(self) -> str:
        return f"http://{self.gw}"

    def admin(self) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {procs.ADMIN_TOKEN}"
        return session

    def redis_client(self) -> Redis:
        return Redis(port=self.redis.port)


def _wait(check: Any, timeout: float, what: str, *logs: procs.Proc) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    tails = "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in logs)
    raise AssertionError(f"{what}: not within {timeout}s\n{tails}")


def _image_workers(stack: ImageStack) -> list[Worker]:
    return [w for w in Worker.all(connection=stack.redis_client())
            if QUEUE in w.queue_names()]


@pytest.fixture(scope="module")
def stack(image: Image, compose: dict[str, Any], tmp_path_factory: pytest.TempPathFactory,
          timings: dict[str, float]) -> Iterator[ImageStack]:
    """Real redis-server and docker-registry on free loopback ports; a gateway and a worker
    from the image, as compose runs them, on a queue of their own."""
    started = time.monotonic()
    workdir = tmp_path_factory.mktemp("image-stack")
    services = compose["services"]
    redis_proc = procs.redis_server(workdir / "redis")
    gw_port = procs.free_port()
    registry = procs.registry_server(workdir / "registry",
                                     f"http://127.0.0.1:{gw_port}/api/v1/webhooks/registry")
    addresses = {"redis": ("127.0.0.1", redis_proc.port),
                 "registry": ("127.0.0.1", registry.port)}
    # the worker on a queue of its own: no process but the image's worker can run its jobs
    own_queue = {"TAGWARDEN_QUEUE": QUEUE}
    gateway_env = service_env(services["gateway"], addresses, bind=f"127.0.0.1:{gw_port}")
    worker_env = service_env(services["worker"], addresses)
    containers: list[Container] = []
    started_procs: list[procs.Proc] = [redis_proc, registry]
    try:
        gateway_ctr = Container.of(image.name, "gateway", {**gateway_env, **own_queue})
        containers.append(gateway_ctr)
        worker_ctr = Container.of(image.name, "worker", {**worker_env, **own_queue})
        containers.append(worker_ctr)
        # compose's gateway has no `command`: the image's CMD runs
        assert "command" not in services["gateway"]
        gateway = gateway_ctr.process("gateway", image.config["Cmd"], workdir / "gateway.log",
                                      gw_port)
        started_procs.append(gateway)
        gateway.start()
        procs.wait_http(f"http://127.0.0.1:{gw_port}/healthz", timeout=60)
        worker = worker_ctr.process("worker", services["worker"]["command"],
                                    workdir / "worker.log", 0)
        started_procs.append(worker)
        worker.start(wait=False)
        s = ImageStack(redis_proc, registry, gateway, worker, gateway_ctr, worker_ctr)
        _wait(lambda: _image_workers(s), 60, "the image's worker registered", worker)
        timings["stack up (gateway + worker)"] = time.monotonic() - started
        yield s
    finally:
        for proc in reversed(started_procs):
            proc.stop(timeout=20)
        for container in containers:
            container.remove()


# ----------------------------------------------------------------------------- tests


def test_image_config_is_what_compose_relies_on(image: Image, compose: dict[str, Any]) -> None:
    config = image.config
    services = _image_services(compose)
    # compose sets no user: the image's numeric, non-root USER is who runs every service
    assert config["User"] == "10001:10001"
    assert not any("user" in svc for svc in services.values())
    # only the gateway publishes a port, and it is the one the image exposes and binds
    assert {name for name, svc in compose["services"].items() if svc.get("ports")} == {
        "gateway"}
    port = _container_port(compose["services"]["gateway"])
    assert set(config["ExposedPorts"]) == {f"{port}/tcp"}
    assert image.env["TAGWARDEN_BIND"] == f"0.0.0.0:{port}"
    assert _env(compose["services"]["gateway"])["TAGWARDEN_BIND"] == f"0.0.0.0:{port}"
    # the HEALTHCHECK survived the build (Docker format) and compose's gateway check is it
    check = config["Healthcheck"]["Test"]
    assert check == ["CMD", "tagwarden", "healthcheck"]
    assert compose["services"]["gateway"]["healthcheck"]["test"] == check
    assert config["Labels"]["org.opencontainers.image.revision"] == image.revision
    assert config["WorkingDir"] == "/app" and not config.get("Entrypoint")


def test_compose_commands_exist_in_the_image(image: Image, compose: dict[str, Any],
                                             timings: dict[str, float]) -> None:
    """Every command compose runs from the image (its `command`, else the image's CMD, and
    the health checks) resolves on the image's PATH, and the one-shot registry-config
    service runs to completion as the image's user, writing where the registry reads."""
    started = time.monotonic()
    services = _image_services(compose)
    commands: dict[str, list[str]] = {}
    for name, svc in services.items():
        commands[name] = svc.get("command") or image.config["Cmd"]
        check = (svc.get("healthcheck") or {}).get("test")
        if check and check[0] == "CMD":
            commands[f"{name} healthcheck"] = check[1:]
    commands["HEALTHCHECK"] = image.config["Healthcheck"]["Test"][1:]
    writer = services["registry-config"]
    ctr = Container.of(image.name, "probe", service_env(writer, {}))
    try:
        programs = sorted({argv[0] for argv in commands.values()})
        which = ("import shutil, sys\n"
                 "for p in sys.argv[1:]: print(f'{p}={shutil.which(p) or \"\"}')")
        where = ctr.run(["python", "-c", which, *programs])
        assert where.returncode == 0, where.stderr
        resolved = dict(line.split("=", 1) for line in where.stdout.splitlines())
        missing = {name: argv[0] for name, argv in commands.items() if not resolved[argv[0]]}
        assert not missing, f"not on the image's PATH: {missing}"
        # the subcommands exist in the image's CLI
        for name, argv in commands.items():
            if argv[0] == "tagwarden":
                helped = ctr.run([argv[0], argv[1], "--help"])
                assert helped.returncode == 0, (name, helped.stderr)
        # the one-shot service, exactly as compose runs it
        done = ctr.run(writer["command"])
        assert done.returncode == 0, done.stderr
        out = writer["command"][writer["command"].index("--out") + 1]
        assert out.startswith("/etc/registry/")  # the directory the image gives uid 10001
        written = ctr.run(["cat", out])
        assert written.returncode == 0, written.stderr
        config = yaml.safe_load(written.stdout)
        assert config["http"]["secret"] == HTTP_SECRET
        endpoint = config["notifications"]["endpoints"][0]
        assert endpoint["headers"]["Authorization"] == [f"Bearer {procs.WEBHOOK_TOKEN}"]
    finally:
        ctr.remove()
    timings["compose commands in the image"] = time.monotonic() - started


def test_processes_run_as_the_image_user_and_only_the_gateway_listens(
        stack: ImageStack) -> None:
    for proc, program in ((stack.gateway, "gunicorn"), (stack.worker, "tagwarden")):
        tree = [p for p in procs.tree(proc.pid)
                if any(program in part for part in p.cmdline()[:2])
                and not p.name().startswith("buildah")]
        assert tree, f"no {program} process under {proc.name}"
        assert {p.uids().real for p in tree} == {10001}, proc.name
    listening: dict[str, set[int]] = {}
    for proc in (stack.gateway, stack.worker):
        ports = set()
        for p in procs.tree(proc.pid):
            try:
                conns = p.net_connections(kind="inet")
            except psutil.NoSuchProcess:
                continue
            ports |= {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN}
        listening[proc.name] = ports
    assert listening == {"image-gateway": {stack.gateway.port}, "image-worker": set()}


def _osv_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for record in fixtures.osv_fixture_records():
            archive.writestr(f"{record['id']}.json", json.dumps(record))
    return buffer.getvalue()


def _promote(stack: ImageStack, **body: str) -> dict[str, Any]:
    resp = stack.admin().post(f"{stack.url}/api/v1/promotions", json=body, timeout=30)
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_push_promote_and_scan_through_the_image(stack: ImageStack, tmp_path: Path,
                                                 timings: dict[str, float]) -> None:
    started = time.monotonic()
    admin, url = stack.admin(), stack.url
    ready = requests.get(f"{url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"redis": "ok", "registry": "ok"}

    # the vulnerability database, uploaded through the image's gateway
    loaded = admin.post(f"{url}/api/v1/vulndb/imports", timeout=60,
                        files={"file": ("osv.zip", _osv_zip(), "application/zip")})
    assert loaded.status_code == 201, loaded.text
    assert loaded.json()["records"] == len(fixtures.osv_fixture_records())

    # push with skopeo through the image's gateway
    pushed = oci.Image(layers=fixtures.vulnerable_image_layers())
    layout = oci.write_layout(tmp_path / "layout", {"img": pushed})
    copied = oci.skopeo_copy(f"oci:{layout}:img", f"docker://{stack.gw}/{REPOSITORY}:v1.0.0",
                             creds=CI_CREDS, extra=["--preserve-digests"])
    assert copied.returncode == 0, copied.stderr
    develop = _promote(stack, repository=REPOSITORY, environment="develop", tag="v1.0.0")
    assert develop["digest"] == pushed.digest

    # a scan, run by the image's worker
    requested = admin.post(f"{url}/api/v1/scans", timeout=10,
                           json={"repository": REPOSITORY, "reference": "v1.0.0"})
    assert requested.status_code == 202, requested.text
    scan_id = requested.json()["id"]

    def finished() -> dict[str, Any] | None:
        body = admin.get(f"{url}/api/v1/scans/{scan_id}", timeout=10).json()
        return body if body["status"] in ("succeeded", "failed") else None

    result = _wait(finished, 120, f"scan {scan_id}", stack.worker, stack.gateway)
    assert result["status"] == "succeeded", result.get("error")
    assert result["digest"] == pushed.digest
    key = ("id", "package", "installed_version", "fixed_version", "severity", "layer")
    assert sorted(tuple(f[k] for k in key) for f in result["findings"]) == sorted(
        tuple(f[k] for k in key) for f in fixtures.EXPECTED_FINDINGS)
    job = stack.redis_client().hgetall(f"rq:job:scan-{scan_id}")
    assert job, "the scan's RQ job is gone"
    assert job[b"origin"].decode() == QUEUE
    # the worker that ran it is registered from the worker container (its own hostname)
    (ran,) = [w for w in _image_workers(stack) if w.name == job[b"worker_name"].decode()]
    hostnames = {ctr.name: ctr.run(["python", "-c", "import socket; print(socket.gethostname())"]
                                   ).stdout.strip()
                 for ctr in (stack.worker_ctr, stack.gateway_ctr)}
    assert ran.hostname == hostnames[stack.worker_ctr.name] != hostnames[stack.gateway_ctr.name]

    # staging, then production: its gate needs the succeeded scan
    _promote(stack, repository=REPOSITORY, environment="staging", from_environment="develop")
    production = _promote(stack, repository=REPOSITORY, environment="production",
                          from_environment="staging")
    assert production["digest"] == pushed.digest
    pulled = subprocess.run(
        [*oci._skopeo_base(), "inspect", "--raw", "--tls-verify=false", "--creds", CI_CREDS,
         f"docker://{stack.gw}/{REPOSITORY}:production"],
        capture_output=True, timeout=60, check=False)
    assert pulled.returncode == 0, pulled.stderr
    assert "sha256:" + hashlib.sha256(pulled.stdout).hexdigest() == pushed.digest

    metrics = requests.get(f"{url}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert metrics.headers["Content-Type"].startswith("text/plain")
    assert re.search(r'^tagwarden_promotions_total\{[^}]*\} [1-9]', metrics.text, re.M), (
        metrics.text[:2000])
    assert "tagwarden_http_requests_total" in metrics.text
    timings["push, promote, scan"] = time.monotonic() - started


def test_health_checks_pass_inside_the_containers(stack: ImageStack, image: Image,
                                                  compose: dict[str, Any]) -> None:
    services = compose["services"]
    healthcheck = image.config["Healthcheck"]["Test"][1:]
    done = stack.gateway_ctr.run(healthcheck, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("healthy: gateway http://127.0.0.1:"), done.stdout
    # and it can fail: the same probe against a port nobody serves
    nobody = stack.gateway_ctr.run(healthcheck, timeout=30,
                                   env={"TAGWARDEN_BIND": f"127.0.0.1:{procs.free_port()}"})
    assert nobody.returncode == 1 and nobody.stderr.startswith("unhealthy: gateway ")
    assert "Traceback" not in nobody.stderr
    for name, ctr in (("gateway", stack.gateway_ctr), ("worker", stack.worker_ctr)):
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD"
        done = ctr.run(test[1:], timeout=30)
        assert done.returncode == 0, (name, done.stderr)
    # the worker's check passes because of this container's worker: not from the gateway's
    elsewhere = stack.gateway_ctr.run(services["worker"]["healthcheck"]["test"][1:], timeout=30)
    assert elsewhere.returncode == 1, elsewhere.stderr
