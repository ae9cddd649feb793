"""Markers from the folder a test lives in."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """unit/, integration/, faults/ and container/ set the marker of the same name."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(HERE).parts
        if parts and parts[0] in ("unit", "integration", "faults", "container"):
            item.add_marker(getattr(pytest.mark, parts[0]))
