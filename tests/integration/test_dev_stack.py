"""`make run`'s stack (tagwarden dev): ready within 60 s, env reaches children, clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import redis
import requests

from testkit import procs


def _start(tmp_path: Path, **extra: str) -> tuple[subprocess.Popen, dict[str, int]]:
    ports = {name: procs.free_port() for name in ("gateway", "redis", "registry")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGWARDEN_")}
    env.update(
        TAGWARDEN_DATA_DIR=str(tmp_path / "data"),
        TAGWARDEN_BIND=f"127.0.0.1:{ports['gateway']}",
        TAGWARDEN_REDIS_ADDR=f"127.0.0.1:{ports['redis']}",
        TAGWARDEN_REGISTRY_ADDR=f"127.0.0.1:{ports['registry']}",
        **extra,
    )
    tagwarden = str(Path(sys.executable).parent / "tagwarden")
    proc = subprocess.Popen([tagwarden, "dev"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    return proc, ports


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _stack_pids(data_dir: Path) -> list[int]:
    """Processes started by the stack, found by their data dir / config in the command line."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "environ"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            env = p.info["environ"] or {}
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
        if str(data_dir) in cmd or env.get("TAGWARDEN_DATA_DIR") == str(data_dir):
            found.append(p.info["pid"])
    return found


def test_dev_stack_starts_ready_and_stops_clean(tmp_path: Path):
    proc, ports = _start(tmp_path, TAGWARDEN_EXTRA_MARKER="reaches-children")
    try:
        procs.wait_http(f"http://127.0.0.1:{ports['gateway']}/readyz", timeout=60)
        ready = requests.get(f"http://127.0.0.1:{ports['gateway']}/readyz", timeout=5).json()
        assert ready["checks"] == {"redis": "ok", "registry": "ok"}
        children = _descendants(proc.pid)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        for needle in ("redis-server", "docker-registry", "gunicorn", "tagwarden worker"):
            assert needle in names, names
        gateway = next(c for c in children if "gunicorn" in " ".join(c.cmdline()))
        assert gateway.environ()["TAGWARDEN_EXTRA_MARKER"] == "reaches-children"
        config = (tmp_path / "data" / "registry.yml").read_text()
        assert f"http://127.0.0.1:{ports['gateway']}/api/v1/webhooks/registry" in config
        stack_redis = redis.Redis(port=ports["redis"], decode_responses=True)
        assert stack_redis.config_get("appendonly") == {"appendonly": "yes"}
        stack_env = dict(line.split("=", 1) for line in
                         (tmp_path / "data" / "stack.env").read_text().splitlines())
        assert stack_env["TAGWARDEN_REDIS_URL"] == f"redis://127.0.0.1:{ports['redis']}/0"
        assert stack_env["TAGWARDEN_URL"] == f"http://127.0.0.1:{ports['gateway']}"
        rq = subprocess.run([str(Path(sys.executable).parent / "rq"), "info", "-u",
                             stack_env["TAGWARDEN_REDIS_URL"], "tagwarden"],
                            capture_output=True, text=True, timeout=60)
        assert rq.returncode == 0, rq.stderr
        assert "tagwarden" in rq.stdout and "1 workers, 1 queues" in rq.stdout
        secrets = dict(line.split("=", 1) for line in
                       (tmp_path / "data" / "secrets.env").read_text().splitlines())
        admin = {"Authorization": f"Bearer {secrets['TAGWARDEN_ADMIN_TOKEN']}"}
        tokens = requests.get(f"http://127.0.0.1:{ports['gateway']}/api/v1/tokens",
                              headers=admin, timeout=10).json()["items"]
        [sample] = [t for t in tokens if t["name"].startswith("make-run-sample-push-")]
        assert (sample["role"], sample["repositories"]) == ("ci", ["team/*"])
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert f"admin token: {secrets['TAGWARDEN_ADMIN_TOKEN']}" in out
    assert f"--dest-creds ci:{secrets['TAGWARDEN_SAMPLE_CI_TOKEN']} " in out
    assert secrets["TAGWARDEN_SAMPLE_CI_TOKEN"] != secrets["TAGWARDEN_ADMIN_TOKEN"]
    assert f"export TAGWARDEN_URL=http://127.0.0.1:{ports['gateway']} TAGWARDEN_TOKEN=" in out
    time.sleep(0.5)
    assert _stack_pids(tmp_path / "data") == []


def test_dev_stack_stops_whole_stack_when_a_process_dies(tmp_path: Path):
    proc, ports = _start(tmp_path)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the stack says it is up once its own readiness check passed
            if "Tagwarden is up" in line:
                break
        registry = next(c for c in _descendants(proc.pid)
                        if "docker-registry" in " ".join(c.cmdline()))
        registry.kill()
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert "registry (exit" in out and "died" in out
    time.sleep(0.5)
    assert _stack_pids(tmp_path / "data") == []
