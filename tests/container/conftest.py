"""The image test's timings, printed at the end of the run (`make image-test`)."""

from __future__ import annotations

import pytest

_TIMINGS = pytest.StashKey[dict[str, float]]()


@pytest.fixture(scope="session")
def timings(pytestconfig: pytest.Config) -> dict[str, float]:
    """phase -> seconds, printed in the terminal summary."""
    return pytestconfig.stash.setdefault(_TIMINGS, {})


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    found = terminalreporter.config.stash.get(_TIMINGS, {})
    if found:
        terminalreporter.section("image test timings")
        for phase, seconds in found.items():
            terminalreporter.write_line(f"{phase:<34} {seconds:6.1f} s")
