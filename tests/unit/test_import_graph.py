"""The import graph of service/, workers/, bench/ and testkit/, read statically (issue 16).

Every `import` and `from ... import` counts, also those inside functions (a function-local
import hides a cycle from the interpreter at start, not from a reader): a cycle between
modules fails, naming it, and so does an import across the layers that must not know each
other. Targets are resolved to the most specific project module (`from service.http import app`
is an edge to `service.http.app`, `from service.store import connect` one to `service.store`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("service", "workers", "bench", "testkit")
PROJECT = (*SCANNED, "tests")  # tests are import targets only (nothing scanned may import them)
FLASK = ("flask", "flask_smorest", "flask_swagger_ui", "werkzeug")

# Imports across the top-level packages that only the folder move (issue 16) removes: each
# crosses in a direction the target layout keeps only because a module sits in the wrong
# folder today. A new crossing fails; so does an entry here that no longer exists.
KNOWN_CROSSINGS: set[tuple[str, str]] = set()


@cache
def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the project's packages."""
    modules = {}
    for top in PROJECT:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _resolve(name: str) -> str | None:
    """The most specific project module `name` is or lies in (None: not the project's)."""
    modules = project_modules()
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imported_names(module: str) -> Iterator[tuple[str, int]]:
    """(absolute dotted name, line) of everything `module` imports, at any depth."""
    path = project_modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno  # a submodule, or a name in `base`


@cache
def graph() -> dict[str, dict[str, int]]:
    """module -> {imported project module: first line importing it}, for SCANNED modules."""
    edges: dict[str, dict[str, int]] = {}
    for module in project_modules():
        if module.split(".")[0] not in SCANNED:
            continue
        out = edges.setdefault(module, {})
        for name, line in imported_names(module):
            target = _resolve(name)
            if target and target != module:
                out.setdefault(target, line)
    return edges


def _components(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, {}))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _cycle_in(component: list[str], edges: dict[str, dict[str, int]]) -> str:
    """One cycle through the component's first module, with the lines importing."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(edges.get(node, {})):
            if child == start:
                path = [*paths[node], start]
                return " -> ".join(
                    f"{a} (line {edges[a][b]})" for a, b in zip(path, path[1:], strict=False)
                ) + f" -> {start}"
            if child in members and child not in paths:
                paths[child] = [*paths[node], child]
                queue.append(child)
    raise AssertionError(f"no cycle found in {component}")  # pragma: no cover


def cycles(edges: dict[str, dict[str, int]]) -> list[str]:
    """Every import cycle, one line each."""
    return [_cycle_in(component, edges) for component in _components(edges)]


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _imports(package: str) -> Iterator[tuple[str, str, int]]:
    """(module, imported name, line) for every import of every module in `package`."""
    for module in sorted(graph()):
        if _under(module, package):
            for name, line in imported_names(module):
                yield module, name, line


def test_the_graph_sees_function_level_imports():
    """The reader counts imports inside functions (service/__init__.py imports app lazily)."""
    assert graph()["service"] == {"service.http.app": 10}
    assert "service.domain.policy" in graph()["service.http.api.policies"]


def test_the_cycle_finder_names_a_cycle():
    """A made-up graph: the finder reports its cycle and ignores the acyclic part."""
    edges = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}}
    assert cycles(edges) == ["a (line 1) -> b (line 2) -> c (line 3) -> a"]
    assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_no_import_cycles():
    """No module of service/, workers/, bench/ or testkit/ reaches itself through imports."""
    found = cycles(graph())
    assert not found, "import cycles:\n  " + "\n  ".join(found)


# top-level package -> the top-level packages it must never import: the product never
# imports the tools that test or measure it; bench/ and testkit/ never import tests/ (the
# tooling both use is testkit/'s); testkit/ serves both and imports neither
BANNED_TOP = {
    "service": ("workers", "testkit", "tests", "bench"),
    "workers": ("testkit", "tests", "bench"),
    "bench": ("tests",),
    "testkit": ("tests", "bench"),
}


def test_top_level_packages_cross_only_downward():
    """service/ never imports workers/ (the workers import service/) except service/ops, the
    tools above both (the CLI starts the worker process); neither imports testkit/, tests/ or
    bench/; bench/ never imports tests/, testkit/ neither of them. The crossings only the
    folder move removes are listed in KNOWN_CROSSINGS."""
    crossings = {
        (module, target)
        for module, targets in graph().items()
        for target in targets
        if target.split(".")[0] in BANNED_TOP[module.split(".")[0]]
        and not (_under(module, "service.ops") and _under(target, "workers"))
    }
    assert crossings - KNOWN_CROSSINGS == set(), "imports against the layers"
    assert KNOWN_CROSSINGS - crossings == set(), "gone: remove them from KNOWN_CROSSINGS"


def test_the_crossing_check_sees_testkit_and_tests():
    """The graph reads bench/ and testkit/, and resolves their imports to testkit modules (so
    a bench module importing tests/ again would be seen, not resolved away)."""
    assert "testkit.procs" in graph()["bench.stack"]
    assert "testkit.oci" in graph()["testkit.scan_fixtures"]
    assert _resolve("tests.helpers.harbor_double") == "tests.helpers.harbor_double"


def test_domain_is_pure():
    """service/domain imports no Flask, Redis or RQ, and no service package but itself."""
    bad = [
        f"{module}:{line} imports {name}"
        for module, name, line in _imports("service.domain")
        if name.split(".")[0] in (*FLASK, "redis", "rq")
        or (_under(name, "service") and not _under(name, "service.domain"))
        or name.split(".")[0] in ("workers", "bench", "tests")
    ]
    assert bad == []


def test_store_knows_no_flask():
    """service/store is reached by the workers too: no Flask there."""
    bad = [f"{module}:{line} imports {name}" for module, name, line in _imports("service.store")
           if name.split(".")[0] in FLASK]
    assert bad == []


def test_workers_never_import_flask():
    """No module of workers/ imports Flask itself (the HTTP side is service/'s).

    Only direct imports: through service.obs.logs a worker still loads Flask today (see the
    issue's "workers import service.core / domain / store")."""
    bad = [f"{module}:{line} imports {name}" for module, name, line in _imports("workers")
           if name.split(".")[0] in FLASK]
    assert bad == []


def test_metrics_know_no_flask():
    """service/obs/metrics (recorded by the workers too) imports neither Flask nor the HTTP
    side: the request hooks and GET /metrics are service/http/metrics_hooks."""
    bad = [f"{module}:{line} imports {name}"
           for module, name, line in _imports("service.obs.metrics")
           if name.split(".")[0] in FLASK or _under(name, "service.http")]
    assert bad == []


# package -> the service packages it must never import (imports point downward only:
# ops -> http -> core -> domain / store / registry; obs beside them, below http)
LAYERS = {
    "service.core": ("service.http", "service.ops"),
    "service.obs": ("service.core", "service.ops"),
    "service.registry": ("service.http", "service.core", "service.ops", "service.store"),
    # the scanner library: read by the API (SBOMs) and the scan job; it knows the vulnerability
    # database (store/vulndb) but no use case, route or tool
    "service.scanner": ("service.http", "service.core", "service.ops"),
    "service.store": ("service.http", "service.core", "service.ops", "service.obs",
                      "service.registry", "service.services", "service.config"),
    "workers": ("service.http", "service.ops"),
}

# Downward imports against the layers that are known and tolerated (none left: the policy and
# backup document schemas live in service/domain/schemas). A new crossing fails.
KNOWN_LAYER_CROSSINGS: set[tuple[str, str]] = set()


def _layer_crossings() -> set[tuple[str, str]]:
    found = set()
    for package, banned in LAYERS.items():
        for module, name, _line in _imports(package):
            if any(_under(name, b) for b in banned):
                found.add((module, _resolve(name) or name))
    for module, name, _line in _imports("service.store"):
        if _under(name, "service") and not (_under(name, "service.store")
                                            or _under(name, "service.domain")):
            found.add((module, _resolve(name) or name))
    return found


def test_layers_import_only_downward():
    """core never imports http or ops, store imports only domain, the registry client knows
    neither the use cases nor Redis, the workers never reach the HTTP side or the tools."""
    found = _layer_crossings()
    assert found - KNOWN_LAYER_CROSSINGS == set(), "imports against the layers"
    assert KNOWN_LAYER_CROSSINGS - found == set(), "gone: remove them from KNOWN_LAYER_CROSSINGS"


def test_only_the_config_and_the_composition_root_stay_loose():
    """service/ holds packages, plus config.py, services.py and __init__.py (issue 16)."""
    loose = {p.name for p in (ROOT / "service").glob("*.py")}
    assert loose == {"__init__.py", "config.py", "services.py"}
