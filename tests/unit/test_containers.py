"""Static checks of the container files: Dockerfile, docker-compose.yml, .dockerignore and
deploy.env.example (no Docker engine needed), plus the probes and the registry config they run.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import re
import secrets
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import click
import fakeredis
import pytest
import yaml
from packaging.specifiers import SpecifierSet
from rq import Queue, Worker

from service.ops.cli import main as cli
from service.ops.registry_config import render_nginx_config, render_registry_config

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD")
WEBHOOK_URL = "http://gateway:8080/api/v1/webhooks/registry"
GENERATE_HINT = re.compile(r"<generate with: (python3 -c '[^']*')>")


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _token() -> str:
    return "tw_" + secrets.token_urlsafe(32)


def _one_shot(services: dict[str, dict[str, Any]]) -> set[str]:
    """Services another one waits for with `service_completed_successfully`."""
    names = set()
    for svc in services.values():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, dict):
            for name, spec in deps.items():
                if (spec or {}).get("condition") == "service_completed_successfully":
                    names.add(name)
    return names


def _long_running(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    skip = _one_shot(services)
    return {name: svc for name, svc in services.items() if name not in skip}


def _argv(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def _env(svc: dict[str, Any]) -> dict[str, Any]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {k: (v if sep else None) for k, sep, v in pairs}
    return dict(env)


def _networks(svc: dict[str, Any]) -> set[str]:
    nets = svc.get("networks") or []
    return set(nets)  # a list of names or a mapping keyed by name


def _mounts(svc: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of every volume entry, short or long syntax."""
    mounts = []
    for entry in svc.get("volumes") or []:
        if isinstance(entry, str):
            parts = entry.split(":")
            source, target = parts[0], parts[1]
            mounts.append((source, target, len(parts) > 2 and "ro" in parts[2].split(",")))
        else:
            mounts.append((entry.get("source", ""), entry["target"], bool(entry.get("read_only"))))
    return mounts


def _registry_config_args(services: dict[str, dict[str, Any]]) -> list[str]:
    """The registry-config service's argv after the `tagwarden` program name."""
    argv = _argv(services["registry-config"]["command"])
    assert argv[:2] == ["tagwarden", "registry-config"], argv
    return argv[1:]


def _parse(argv: list[str]) -> SimpleNamespace:
    """The options the `tagwarden` CLI parses from argv (after the program name)."""
    name, *rest = argv
    command = cli.cli.get_command(click.Context(cli.cli), name)
    assert command is not None, f"tagwarden has no subcommand {name!r}"
    return SimpleNamespace(**command.make_context(name, rest).params)


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    buf = ""
    for raw in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("#") or (not buf and not line):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf = (buf + line).strip()
        if buf:
            word, _, rest = buf.partition(" ")
            instructions.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "Dockerfile ends inside a line continuation"
    return instructions


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _dockerfile():
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def _from_image(args: str) -> tuple[str, str | None]:
    words = [w for w in args.split() if not w.startswith("--")]
    name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
    return words[0], name


def _env_instructions(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for word, args in stage:
        if word == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def _healthcheck_argv(stage: list[tuple[str, str]]) -> list[str]:
    checks = [args for word, args in stage if word == "HEALTHCHECK"]
    assert len(checks) == 1, "the final stage needs exactly one HEALTHCHECK"
    _, sep, command = checks[0].partition("CMD ")
    assert sep, checks[0]
    return json.loads(command)


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def _match_parts(parts: list[str], pattern: list[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match_parts(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return (
        bool(parts)
        and fnmatch.fnmatchcase(parts[0], pattern[0])
        and _match_parts(parts[1:], pattern[1:])
    )


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: a pattern excludes a path when it matches it or one of its parents."""
    parts = path.split("/")
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = (raw[1:] if negate else raw).strip("/").split("/")
        if any(_match_parts(parts[:end], pattern) for end in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


# ----------------------------------------------------------------------------- compose


def test_only_gateway_publishes_a_port(services: dict[str, dict[str, Any]]) -> None:
    publishing = {name for name, svc in services.items() if svc.get("ports")}
    assert publishing == {"gateway"}
    # what is published is the port the gateway binds inside its container
    bind_port = _env(services["gateway"])["TAGWARDEN_BIND"].rpartition(":")[2]
    assert [str(p).rpartition(":")[2] for p in services["gateway"]["ports"]] == [bind_port]
    for name, svc in services.items():
        assert svc.get("network_mode") in (None, "none"), f"{name} must not share a network"


def test_redis_and_registry_only_on_the_internal_network(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    networks = compose["networks"]
    assert networks["internal"]["internal"] is True
    assert not (networks.get("edge") or {}).get("internal")
    for name in ("redis", "registry"):
        assert _networks(services[name]) == {"internal"}, name
    assert _networks(services["gateway"]) == {"internal", "edge"}
    assert "internal" in _networks(services["worker"])
    # The one-shot config writer needs no network at all.
    assert services["registry-config"].get("network_mode") == "none"


def test_long_running_services_have_healthcheck_restart_and_limits(
    services: dict[str, dict[str, Any]],
) -> None:
    assert _one_shot(services) == {"registry-config"}
    assert str(services["registry-config"].get("restart", "no")) == "no"
    running = _long_running(services)
    assert {"registry", "redis", "gateway", "worker"} <= set(running)
    for name, svc in running.items():
        check = svc.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name}: no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert svc.get("restart") == "unless-stopped", f"{name}: restart policy"
        limits = ((svc.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        assert limits.get("cpus") and limits.get("memory"), f"{name}: resource limits"
        assert "cpus" not in svc and "mem_limit" not in svc, f"{name}: limits set twice"


def test_healthcheck_commands(services: dict[str, dict[str, Any]]) -> None:
    registry = services["registry"]["healthcheck"]["test"]
    assert registry[0] == "CMD" and urlsplit(registry[-1]).path == "/v2/", registry
    assert "redis-cli ping" in " ".join(services["redis"]["healthcheck"]["test"])
    # the image's own check (`tagwarden healthcheck`), the same for the gateway as in the image
    assert services["gateway"]["healthcheck"]["test"] == ["CMD", *_healthcheck_argv(_stages()[-1])]
    assert services["gateway"]["healthcheck"]["test"] == ["CMD", "tagwarden", "healthcheck"]
    assert services["worker"]["healthcheck"]["test"] == ["CMD", "tagwarden", "healthcheck",
                                                         "--worker"]


def test_volumes_are_named(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose["volumes"])
    assert {"registry-data", "redis-data", "registry-config"} <= declared
    used = set()
    for name, svc in services.items():
        for source, target, _ in _mounts(svc):
            assert source in declared, f"{name}: {source}:{target} is not a named volume"
            used.add(source)
    assert used == declared, f"declared but unused: {declared - used}"
    assert ("redis-data", "/data", False) in _mounts(services["redis"])
    assert ("registry-data", "/var/lib/registry", False) in _mounts(services["registry"])


def test_no_literal_secrets_in_compose(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        for key, value in _env(svc).items():
            if any(word in key.upper() for word in SECRET_WORDS):
                assert value is None or re.fullmatch(r"\$\{\w+\}", str(value)), (
                    f"{name}: {key} has a literal value; put it in deploy.env"
                )
    for name in ("registry-config", "gateway", "worker"):
        assert _argv(services[name].get("env_file")) == ["deploy.env"], name
    # The registry reads its secret from the rendered config; Redis needs none.
    for name in ("registry", "redis"):
        assert "env_file" not in services[name], name
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert not re.search(r"tw_[A-Za-z0-9_-]{20,}", text), "a generated token is in the file"


def test_gateway_and_worker_share_the_image_and_settings(
    services: dict[str, dict[str, Any]],
) -> None:
    gateway, worker, writer = services["gateway"], services["worker"], services["registry-config"]
    assert gateway["build"] == "."
    assert gateway["image"] == worker["image"] == writer["image"]
    redis_argv = _argv(services["redis"]["command"])
    redis_port = int(dict(zip(redis_argv[1::2], redis_argv[2::2], strict=False)).get(
        "--port", 6379))
    for name in ("gateway", "worker"):
        env = _env(services[name])
        # both reach Redis and the registry by service name, on the internal network
        redis_url = urlsplit(env["TAGWARDEN_REDIS_URL"])
        assert (redis_url.hostname, redis_url.port or 6379) == ("redis", redis_port), name
        assert urlsplit(env["TAGWARDEN_REGISTRY_URL"]).hostname == "registry", name
        deps = services[name]["depends_on"]
        assert deps["redis"]["condition"] == "service_healthy", name
        assert deps["registry"]["condition"] == "service_healthy", name
    assert _env(gateway)["TAGWARDEN_BIND"].rpartition(":")[0] == "0.0.0.0"  # reachable


def test_worker_can_be_scaled(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker
    assert not worker.get("ports")
    assert _argv(worker["command"]) == ["tagwarden", "worker"]
    assert _parse(["worker"]).burst is False


def test_redis_and_registry_images(services: dict[str, dict[str, Any]]) -> None:
    redis_svc = services["redis"]
    argv = _argv(redis_svc["command"])
    assert argv[0] == "redis-server"
    pairs = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert pairs["--appendonly"] == "yes"
    assert pairs["--appendfsync"] == "everysec"
    # the deployment runs the registry line the integration suite runs against
    name, _, version = services["registry"]["image"].partition(":")
    assert name == "registry"
    tested = subprocess.run(["docker-registry", "--version"], capture_output=True, text=True,
                            timeout=30).stdout
    tested_minor = re.search(r"v?(\d+\.\d+)\.\d+", tested)
    assert tested_minor, tested
    assert version.rsplit(".", 1)[0] == tested_minor.group(1), (version, tested)
    for name, svc in services.items():
        image = svc.get("image", "")
        if "build" in svc:
            continue
        tag = image.rpartition("/")[2].partition(":")[2]
        assert tag and tag != "latest", f"{name}: image {image!r} is not pinned"


def test_registry_serves_the_config_written_by_registry_config(
    services: dict[str, dict[str, Any]],
) -> None:
    args = _parse(_registry_config_args(services))
    out = PurePosixPath(args.out)
    writer, registry = services["registry-config"], services["registry"]
    assert _argv(registry["command"]) == ["registry", "serve", str(out)]
    assert registry["depends_on"]["registry-config"] == {
        "condition": "service_completed_successfully"
    }
    written = {target: source for source, target, _ in _mounts(writer)}
    read = {target: (source, ro) for source, target, ro in _mounts(registry)}
    assert written[str(out.parent)] == "registry-config"
    assert read[str(out.parent)] == ("registry-config", True)
    # The data dir in the config is where the registry's storage volume is mounted, and the
    # address is the one the gateway, the worker and the healthcheck use.
    assert read[args.data_dir] == ("registry-data", False)
    port = args.addr.rpartition(":")[2]
    assert urlsplit(_env(services["gateway"])["TAGWARDEN_REGISTRY_URL"]).port == int(port)
    assert f"127.0.0.1:{port}/" in registry["healthcheck"]["test"][-1]
    # The webhook goes to the gateway service on its container port.
    hook = urlsplit(args.webhook_url)
    assert args.webhook_url == WEBHOOK_URL
    assert hook.hostname == "gateway"
    assert str(services["gateway"]["ports"][0]).endswith(f":{hook.port}")


def test_rendered_registry_config_matches_the_compose_arguments(
    services: dict[str, dict[str, Any]],
) -> None:
    args = _parse(_registry_config_args(services))
    token, secret = _token(), _token()
    text = render_registry_config(
        data_dir=args.data_dir, addr=args.addr, secret=secret,
        webhook_url=args.webhook_url, webhook_token=token,
    )
    config = yaml.safe_load(text)
    assert config["storage"]["delete"]["enabled"] is True
    assert config["storage"]["filesystem"]["rootdirectory"] == "/var/lib/registry"
    assert config["http"]["addr"] == "0.0.0.0:5000"
    assert config["http"]["secret"] == secret
    (endpoint,) = config["notifications"]["endpoints"]
    assert endpoint["url"] == WEBHOOK_URL
    assert endpoint["headers"]["Authorization"] == [f"Bearer {token}"]


def test_registry_config_command_writes_the_file(
    services: dict[str, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = _registry_config_args(services)
    out = tmp_path / "config.yml"
    argv[argv.index("--out") + 1] = str(out)
    monkeypatch.setenv("TAGWARDEN_WEBHOOK_TOKEN", _token())
    monkeypatch.setenv("REGISTRY_HTTP_SECRET", _token())
    assert cli.main(argv) == 0
    config = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert config["notifications"]["endpoints"][0]["url"] == WEBHOOK_URL


def test_prometheus_is_optional_and_scrapes_the_gateway(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    (mount,) = prometheus["configs"]
    content = compose["configs"][mount["source"]]["content"]
    assert mount["target"] == "/etc/prometheus/prometheus.yml"
    (job,) = yaml.safe_load(content)["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["gateway:8080"]
    assert _networks(prometheus) & _networks(services["gateway"])


# ----------------------------------------------------------------------------- deploy.env


def _example_env() -> dict[str, str]:
    values = {}
    for line in (ROOT / "deploy.env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, line
            values[key.strip()] = value
    return values


def test_deploy_env_example_documents_the_secrets() -> None:
    values = _example_env()
    assert set(values) == {"TAGWARDEN_ADMIN_TOKEN", "TAGWARDEN_WEBHOOK_TOKEN",
                           "REGISTRY_HTTP_SECRET"}
    for key, value in values.items():
        # the placeholder's command, run as written, prints a secret of the token format
        hint = GENERATE_HINT.fullmatch(value.strip())
        assert hint, (key, value)
        argv = shlex.split(hint.group(1))
        out = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True,
                             timeout=30, check=True).stdout.strip()
        assert re.fullmatch(r"tw_[A-Za-z0-9_-]{43}", out), (key, out)
    assert not re.search(r"tw_[A-Za-z0-9_-]{20,}", "".join(values.values()))


def test_unedited_placeholders_cannot_start_the_registry() -> None:
    values = _example_env()
    with pytest.raises(ValueError, match="registry secret"):
        render_registry_config(
            data_dir="/var/lib/registry", addr="0.0.0.0:5000",
            secret=values["REGISTRY_HTTP_SECRET"], webhook_url=WEBHOOK_URL,
            webhook_token=_token(),
        )
    with pytest.raises(ValueError, match="registry webhook_token"):
        render_registry_config(
            data_dir="/var/lib/registry", addr="0.0.0.0:5000", secret=_token(),
            webhook_url=WEBHOOK_URL, webhook_token=values["TAGWARDEN_WEBHOOK_TOKEN"],
        )


# ----------------------------------------------------------------------------- Dockerfile


def test_dockerfile_is_multi_stage_with_pinned_bases() -> None:
    stages = _stages()
    assert len(stages) >= 2
    names: set[str] = set()
    bases = []
    for stage in stages:
        image, name = _from_image(stage[0][1])
        if image not in names:
            tag = image.partition("@")[0].rpartition("/")[2].partition(":")[2]
            assert tag and tag != "latest", f"FROM {image} is not pinned"
            bases.append(image)
        if name:
            names.add(name)
    # The venv is copied between stages: same interpreter at the same path in both.
    assert len(set(bases)) == 1
    # the base's Python satisfies the project's requires-python
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    base_python = re.match(r"python:(\d+\.\d+)", bases[0])
    assert base_python, bases[0]
    assert SpecifierSet(requires).contains(base_python.group(1) + ".0"), (bases[0], requires)
    final = stages[-1]
    copies = [args for word, args in final if word == "COPY" and args.startswith("--from=")]
    assert any(args.split()[1:] == ["/opt/venv", "/opt/venv"] for args in copies), copies


def test_dockerfile_runs_as_non_root_user() -> None:
    final = _stages()[-1]
    words = [word for word, _ in final]
    start = max(i for i, w in enumerate(words) if w in ("CMD", "ENTRYPOINT"))
    users = [args for word, args in final[:start] if word == "USER"]
    assert users, "no USER before the final CMD/ENTRYPOINT"
    user = users[-1].split(":")[0]
    # numeric, so that a runAsNonRoot check can verify it without /etc/passwd
    assert user.isdigit() and int(user) != 0, user
    assert not any(word == "USER" for word, _ in final[start:])


def test_dockerfile_healthcheck_entrypoint_and_environment() -> None:
    final = _stages()[-1]
    argv = _healthcheck_argv(final)
    assert argv == ["tagwarden", "healthcheck"]
    cmd = [json.loads(args) for word, args in final if word == "CMD"]
    assert cmd[-1] == ["gunicorn", "-c", "/app/gunicorn.conf.py", "service:create_app()"]
    assert not any(word == "ENTRYPOINT" for word, _ in final)
    assert ("COPY", "gunicorn.conf.py /app/gunicorn.conf.py") in final
    env = _env_instructions(final)
    host, _, port = env["TAGWARDEN_BIND"].rpartition(":")
    assert host == "0.0.0.0" and ("EXPOSE", port) in final, env["TAGWARDEN_BIND"]
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and env["PYTHONUNBUFFERED"] == "1"
    labels = " ".join(args for word, args in final if word == "LABEL")
    found = set(re.findall(r"org\.opencontainers\.image\.([a-z.]+)=", labels))
    assert {"title", "description", "version", "revision", "created"} <= found


def test_dockerfile_has_no_secrets() -> None:
    for word, args in _dockerfile():
        if word in ("ENV", "ARG"):
            keys = [item.partition("=")[0] for item in shlex.split(args)]
            for key in keys:
                assert not any(w in key.upper() for w in SECRET_WORDS), f"{word} {key}"


def test_dockerfile_copies_only_what_the_context_contains() -> None:
    patterns = _dockerignore()
    for word, args in _dockerfile():
        if word != "COPY" or args.startswith("--from="):
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        for source in words[:-1]:
            if any(ch in source for ch in "*?["):
                continue  # optional file (e.g. README.md*)
            assert (ROOT / source).exists(), f"COPY {source}: missing"
            assert not _ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_local_state_and_tests_out() -> None:
    patterns = _dockerignore()
    for path in (".venv", ".data", ".git", "tests", "tests/unit/test_containers.py", "bench",
                 ".pytest_cache", ".mypy_cache", ".ruff_cache", "service/__pycache__/x.pyc",
                 "tagwarden.egg-info", "deploy.env"):
        assert _ignored(path, patterns), path
    for path in ("pyproject.toml", "README.md", "gunicorn.conf.py", "service/http/app.py",
                 "service/ops/nginx.conf.tmpl", "workers/main.py"):
        assert not _ignored(path, patterns), path


# ----------------------------------------------------------------------------- probes


@pytest.fixture
def healthz_server() -> Iterator[tuple[int, dict[str, int]]]:
    """A local HTTP server answering /healthz with a status the test controls."""
    state = {"status": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            code = state["status"] if self.path == "/healthz" else 404
            body = b'{"status":"ok"}'
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _run_probe(argv: list[str], port: int) -> int:
    assert argv[0] == "tagwarden"
    env = {"TAGWARDEN_BIND": f"0.0.0.0:{port}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([str(Path(sys.executable).parent / "tagwarden"), *argv[1:]], env=env,
                          capture_output=True, text=True, timeout=30, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode


def test_gateway_healthchecks_probe_healthz(
    services: dict[str, dict[str, Any]], healthz_server: tuple[int, dict[str, int]]
) -> None:
    port, state = healthz_server
    probes = [_healthcheck_argv(_stages()[-1]), services["gateway"]["healthcheck"]["test"][1:]]
    for argv in probes:
        state["status"] = 200
        assert _run_probe(argv, port) == 0
        state["status"] = 503
        assert _run_probe(argv, port) == 1
    assert _run_probe(probes[0], free_port()) == 1  # nothing listening


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_worker_healthcheck_requires_this_hosts_worker(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = services["worker"]["healthcheck"]["test"]
    assert argv[:2] == ["CMD", "tagwarden"]
    fake = fakeredis.FakeRedis()
    monkeypatch.setattr("service.store.connect", lambda *_a, **_k: fake)
    monkeypatch.setenv("TAGWARDEN_REDIS_URL", "redis://redis:6379/0")

    def probe() -> int:
        return cli.main(argv[2:])

    assert probe() == 1  # no worker registered yet
    assert "unhealthy: no worker of " in capsys.readouterr().err
    other = Worker([Queue("tagwarden", connection=fake)], connection=fake)
    other.hostname = "another-container"
    other.register_birth()
    assert probe() == 1  # a worker, but not this container's
    elsewhere = Worker([Queue("other-queue", connection=fake)], connection=fake)
    elsewhere.register_birth()
    assert probe() == 1  # this container's, but not on Tagwarden's queue
    mine = Worker([Queue("tagwarden", connection=fake)], connection=fake)
    mine.register_birth()
    capsys.readouterr()
    assert probe() == 0
    assert capsys.readouterr().out.startswith("healthy: worker of ")
    # registered, but silent for longer than its ttl (a stuck worker whose key lingers)
    fake.hset(mine.key, "last_heartbeat", "2020-01-01T00:00:00.000000Z")
    assert probe() == 1
    assert "sent no heartbeat for more than 105s" in capsys.readouterr().err


def test_nginx_config_command_renders_a_front_proxy_config(tmp_path: Path) -> None:
    out = tmp_path / "nginx.conf"
    assert cli.main(["nginx-config", "--listen", "0.0.0.0:443", "--gateway", "gateway:8080",
                     "--storage", "/srv/registry/", "--run-dir", "/run/tw-nginx",
                     "--out", str(out)]) == 0
    text = out.read_text()
    assert "listen 0.0.0.0:443;" in text
    assert "server gateway:8080;" in text
    # the internal location maps onto the registry's blob store, only by internal redirect
    assert "location /_tagwarden/blobs/ {\n            internal;" in text
    assert "alias /srv/registry/docker/registry/v2/blobs/;" in text
    assert "proxy_set_header X-Tagwarden-Blob-Accel /_tagwarden/blobs/;" in text
    assert "$http_host" in text and "$$" not in text  # nginx variables survive templating


@pytest.mark.parametrize("field", ["listen", "gateway", "storage", "run_dir", "accel_path"])
def test_nginx_config_refuses_nginx_syntax_in_values(field: str) -> None:
    values = {"listen": "0.0.0.0:80", "gateway": "gw:8080", "storage": "/var/lib/registry",
              "run_dir": "/run/x", "accel_path": "/_tw/"}
    values[field] = values[field] + "; include /etc/passwd"
    with pytest.raises(ValueError, match=field):
        render_nginx_config(**values)


def test_nginx_config_command_reports_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["nginx-config", "--accel-path", "no-slash"]) == 2
    assert "accel_path" in capsys.readouterr().err


def test_ha_profile_has_the_sentinel_topology(services: dict[str, dict[str, Any]]) -> None:
    ha = {name for name, svc in services.items() if "ha" in (svc.get("profiles") or [])}
    assert ha == {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
    replica = _argv(services["redis-replica"]["command"])
    assert replica[replica.index("--replicaof") + 1:][:2] == ["redis", "6379"]
    assert services["redis-replica"]["image"] == services["redis"]["image"]
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        svc = services[name]
        script = " ".join(_argv(svc["command"]))
        assert "sentinel monitor tagwarden redis 6379 2" in script, name
        assert "--sentinel" in script and "/data/sentinel.conf" in script, name
        assert _networks(svc) == {"internal"}, name
        assert not svc.get("ports"), name
    assert len({_mounts(services[n])[0][0] for n in ("sentinel-1", "sentinel-2",
                                                     "sentinel-3")}) == 3
    env = _env(services["gateway"])
    assert env["TAGWARDEN_REDIS_SENTINEL_MASTER"] == "tagwarden"
    assert env["TAGWARDEN_REDIS_SENTINELS"].startswith("${TAGWARDEN_REDIS_SENTINELS")
    assert _env(services["worker"])["TAGWARDEN_REDIS_SENTINELS"] == env[
        "TAGWARDEN_REDIS_SENTINELS"]


# ----------------------------------------------------------------------------- settings


def _string_constants(*roots: Path) -> set[str]:
    """Every string literal in the Python files under roots (files or directories)."""
    import ast

    found: set[str] = set()
    for root in roots:
        for path in [root] if root.is_file() else sorted(root.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    found.add(node.value)
    return found


def test_every_variable_compose_sets_is_read_by_the_code(
    services: dict[str, dict[str, Any]],
) -> None:
    """A misspelt or retired setting in docker-compose.yml (or deploy.env) would be silently
    ignored: each variable the image's services get must be a name the code reads (the
    settings of service/config.py, the os.environ reads elsewhere, gunicorn.conf.py)."""
    read = _string_constants(ROOT / "service", ROOT / "workers", ROOT / "gunicorn.conf.py")
    assert "TAGWARDEN_REDIS_URL" in read and "TAGWARDEN_BIND" in read  # the scan works
    image_services = {name: svc for name, svc in services.items() if "build" in svc}
    assert set(image_services) == {"registry-config", "gateway", "worker"}
    for name, svc in image_services.items():
        names = set(_env(svc))
        if "deploy.env" in _argv(svc.get("env_file")):
            names |= set(_example_env())
        unread = sorted(names - read)
        assert not unread, f"{name}: {unread} set but never read by the code"
