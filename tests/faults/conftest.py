"""Fault-injection stacks: each test gets its own processes, Redis with appendfsync always."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Stack, start_stack


def start_fault_stack(workdir: Path, worker: bool = True, **env_extra: str) -> Stack:
    """Like the integration stack, but Redis fsyncs every write (acknowledged = durable)."""
    return start_stack(workdir, worker, fsync="always", **env_extra)


@pytest.fixture
def fault_stack(tmp_path: Path) -> Iterator[Stack]:
    """A private stack that a test may break."""
    stack = start_fault_stack(tmp_path)
    yield stack
    stack.stop()


SUMMARY: list[str] = []


def report(scenario: str, **counts: object) -> None:
    """Record a scenario's counts for the closing summary (sent, acknowledged, lost, ...)."""
    SUMMARY.append(f"{scenario}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))


def pytest_terminal_summary(terminalreporter) -> None:  # noqa: ANN001 - pytest hook
    """One line per fault scenario at the end of the run."""
    if SUMMARY:
        terminalreporter.section("fault scenarios")
        for line in SUMMARY:
            terminalreporter.write_line(line)
