"""The lock files (`make lock`, pip-tools) cover pyproject.toml's dependencies.

`make venv`, CI and the Dockerfile install from requirements/*.txt, not from pyproject.toml: a
dependency added to (or tightened in) pyproject.toml without re-locking would be missing from
every install, so it fails here first.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "requirements" / "runtime.txt"
TEST = ROOT / "requirements" / "test.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s#;]+)\s*(#.*)?$")


def pins(path: Path) -> dict[str, Version]:
    """name -> version of every line of a lock; anything but an exact pin fails."""
    found = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"{path.name}:{number}: not an exact pin: {line!r}"
        found[canonicalize_name(match[1])] = Version(match[2])
    return found


def declared(group: str) -> list[Requirement]:
    """pyproject.toml's runtime dependencies (`runtime`) or an optional group."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    texts = project["dependencies"] if group == "runtime" else \
        project["optional-dependencies"][group]
    return [Requirement(text) for text in texts]


def uncovered(requirements: list[Requirement], locked: dict[str, Version]) -> list[str]:
    """The requirements a lock lacks or pins outside their specifier."""
    missing = []
    for requirement in requirements:
        version = locked.get(canonicalize_name(requirement.name))
        if version is None:
            missing.append(f"{requirement}: not locked")
        elif not requirement.specifier.contains(version, prereleases=True):
            missing.append(f"{requirement}: locked at {version}")
    return missing


@pytest.mark.parametrize(("lock", "groups"), [(RUNTIME, ["runtime"]),
                                              (TEST, ["runtime", "test"])])
def test_the_lock_covers_pyproject(lock: Path, groups: list[str]):
    """Every dependency pyproject.toml declares is pinned, at a version it allows."""
    required = [r for group in groups for r in declared(group)]
    assert uncovered(required, pins(lock)) == [], f"run `make lock` ({lock.name})"


def test_test_lock_keeps_the_runtime_versions():
    """The tests run against the versions the image installs."""
    runtime, test = pins(RUNTIME), pins(TEST)
    assert {name: test.get(name) for name in runtime} == runtime


def test_a_dependency_added_without_relocking_is_caught():
    """The check itself: a new name, or a bound the pin falls outside of, is reported."""
    locked = {"flask": Version("3.1.3")}
    assert uncovered([Requirement("flask>=3.0")], locked) == []
    assert uncovered([Requirement("Flask[async]>=3.0")], locked) == []
    assert uncovered([Requirement("honcho>=2.0")], locked) == ["honcho>=2.0: not locked"]
    assert uncovered([Requirement("flask>=3.2")], locked) == ["flask>=3.2: locked at 3.1.3"]
