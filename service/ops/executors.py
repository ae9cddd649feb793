"""Processes started, awaited and stopped with mirakuru (its TCP/HTTP executors: made for this,
used by pytest-redis and pytest-postgresql), for `make run` (stack.py) and the test and bench
tooling (testkit/procs.py): each in its own process group, from the checkout, its output
appended to a log file."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mirakuru import HTTPExecutor, SimpleExecutor, TCPExecutor
from mirakuru.base import ENV_UUID
from mirakuru.exceptions import ExecutorError, ProcessFinishedWithError

ROOT = Path(__file__).resolve().parents[2]  # the checkout (service/ops/executors.py)


class StartAborted(ExecutorError):
    """The wait for a process to be ready was given up early (another process died)."""

    def __init__(self, executor: SimpleExecutor, reason: str) -> None:
        super().__init__(executor)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class Supervised(SimpleExecutor):
    """What the executors do here besides mirakuru's own.

    - The environment is exactly the one given: mirakuru starts from the caller's os.environ,
      but the tests strip the caller's TAGWARDEN_* settings. mirakuru's marker variable is
      kept: it finds a process's descendants by it when stopping.
    - `abort` (a reason, or "") ends the wait for readiness at once: the stack gives up when
      another of its processes died meanwhile.
    - `stop_within`: mirakuru has one deadline for start and stop; a stop has its own here.
    """

    exact_env: dict[str, str]
    abort: Callable[[], str] | None = None

    @property
    def envvars(self) -> dict[str, str]:
        return {**self.exact_env, ENV_UUID: self._uuid}

    def after_start_check(self) -> bool:
        reason = self.abort() if self.abort else ""
        if reason:
            raise StartAborted(self, reason)
        ready: bool = super().after_start_check()  # type: ignore[misc]
        return ready

    def stop_within(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        """Signal the process group with `sig`, SIGKILL it if it outlives `timeout`, then
        SIGKILL any descendant left; a process that already ended is left as it is."""
        if not self.running():
            return
        self._timeout = timeout
        try:
            self.stop(stop_signal=sig)
        except ProcessFinishedWithError:
            pass  # it stopped, with an exit status of its own choosing: not an error here
        self.kill()


class Simple(Supervised):
    """Started at once."""


class TCP(Supervised, TCPExecutor):
    """Started once its port accepts connections."""


class HTTP(Supervised, HTTPExecutor):
    """Started once a GET of its URL answers 200."""


def start(argv: list[str], env: dict[str, str], log: Path, *, port: str = "", url: str = "",
          timeout: float = 20.0, abort: Callable[[], str] | None = None) -> Supervised:
    """Start argv with exactly `env`, its output appended to `log`; return once GET `url`
    answers 200, else once `port` (host:port) accepts connections, else at once.

    Raises mirakuru's ExecutorError if it exits, times out or is aborted first (it is
    stopped then)."""
    with log.open("ab") as handle:
        common: dict[str, Any] = dict(cwd=str(ROOT), timeout=timeout, sleep=0.05,
                                      stdin=subprocess.DEVNULL, stdout=handle,
                                      stderr=subprocess.STDOUT)
        executor: Supervised
        if url:
            executor = HTTP(argv, url, status=200, method="GET", request_timeout=2, **common)
        elif port:
            host, _, number = port.rpartition(":")
            executor = TCP(argv, host, int(number), **common)
        else:
            executor = Simple(argv, **common)
        executor.exact_env = env
        executor.abort = abort
        try:
            return executor.start()
        except ExecutorError:
            executor.kill()
            raise
