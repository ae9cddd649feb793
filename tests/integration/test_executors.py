"""service/ops/executors.py: what `make run` and testkit/procs.py rely on beyond mirakuru's
own behaviour (exact environment, aborted waits, a stop deadline of its own, descendants)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest
from mirakuru.exceptions import ProcessExitedWithError

from service.ops import executors
from testkit import procs

PY = sys.executable


def _gone(pid: int, within: float = 0.0) -> bool:
    """The process has ended (a zombie counts: its parent may be gone, not reaping it)."""
    deadline = time.monotonic() + within
    while True:
        try:
            ended = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            ended = True
        if ended or time.monotonic() >= deadline:
            return ended
        time.sleep(0.02)


def test_the_environment_is_exactly_the_one_given(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TAGWARDEN_LEAKED_FROM_CALLER", "1")
    log = tmp_path / "env.log"
    env = {"PATH": os.environ["PATH"], "ONLY_THIS": "yes"}
    code = "import os; print(sorted(k for k in os.environ if k != 'LC_CTYPE'))"
    executor = executors.start([PY, "-c", code], env, log)
    assert executor.process is not None and executor.process.wait(timeout=10) == 0
    assert log.read_text().strip() == "['ONLY_THIS', 'PATH', 'mirakuru_uuid']"


def test_ready_once_the_url_answers_and_output_appends_to_the_log(tmp_path: Path):
    log = tmp_path / "http.log"
    log.write_text("before\n")
    port = procs.free_port()
    executor = executors.start([PY, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                               dict(os.environ), log, url=f"http://127.0.0.1:{port}/")
    try:
        assert executor.running()
        assert executor.process is not None
        pid = executor.process.pid
        assert os.getpgid(pid) == pid  # its own process group
    finally:
        executor.stop_within(10)
    assert _gone(pid)
    assert log.read_text().startswith("before\n") and '"GET / HTTP/1.1" 200' in log.read_text()


def test_a_process_exiting_before_it_is_ready_raises(tmp_path: Path):
    with pytest.raises(ProcessExitedWithError):
        executors.start([PY, "-c", "raise SystemExit(3)"], dict(os.environ), tmp_path / "x.log",
                        port=f"127.0.0.1:{procs.free_port()}")


def test_the_wait_is_aborted_at_once_and_the_process_killed(tmp_path: Path):
    started = time.monotonic()
    with pytest.raises(executors.StartAborted, match="redis \\(exit -9\\)"):
        executors.start([PY, "-c", "import time; time.sleep(60)"], dict(os.environ),
                        tmp_path / "x.log", port=f"127.0.0.1:{procs.free_port()}",
                        abort=lambda: "redis (exit -9)")
    assert time.monotonic() - started < 5
    assert not [p for p in psutil.process_iter(["cmdline"])
                if p.info["cmdline"] == [PY, "-c", "import time; time.sleep(60)"]
                and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("parent_ignores_sigterm", [True, False])
def test_stop_kills_what_outlives_the_deadline_and_its_descendants(
        tmp_path: Path, parent_ignores_sigterm: bool):
    # the child leaves the process group (a setsid'd grandchild, like RQ's work-horse) and
    # ignores SIGTERM; the parent ignores it too (SIGKILL at the deadline) or obeys it (the
    # child is left over, found by mirakuru's marker)
    ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN);" if parent_ignores_sigterm else ""
    code = ("import os, signal, subprocess, sys, time;" + ignore +
            "subprocess.Popen([sys.executable, '-c', 'import signal, time;"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'],"
            " start_new_session=True); print('up', flush=True); time.sleep(60)")
    log = tmp_path / "stubborn.log"
    executor = executors.start([PY, "-c", code], dict(os.environ), log)
    assert executor.process is not None
    pid = executor.process.pid
    deadline = time.monotonic() + 10
    while "up" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    [child] = psutil.Process(pid).children()
    started = time.monotonic()
    executor.stop_within(1.0)
    took = time.monotonic() - started
    assert (0.9 < took < 5) if parent_ignores_sigterm else took < 0.9
    assert _gone(pid) and _gone(child.pid, within=2.0)
    assert executor.process is None
    executor.stop_within(1.0)  # stopping again is a no-op


def test_proc_keeps_its_api_across_kill_and_restart(tmp_path: Path):
    """testkit's Proc: pid and proc (its Popen) survive a stop; start again on the same port."""
    redis = procs.redis_server(tmp_path / "redis")
    first = redis.pid
    os.kill(first, signal.SIGSTOP)
    os.kill(first, signal.SIGCONT)
    redis.kill()
    assert redis.proc is not None and redis.proc.poll() == -signal.SIGKILL
    assert redis.pid == first
    redis.start()
    try:
        assert redis.pid != first and redis.proc.poll() is None
        assert {c.laddr.port for c in psutil.Process(redis.pid).net_connections("tcp")} == {
            redis.port}
    finally:
        redis.stop()
    assert redis.proc.poll() == 0 and _gone(redis.pid)
