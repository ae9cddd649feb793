"""Results: one dict per benchmark row, results.json, the machine, and the printed table."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.stats import fmt


@dataclass
class Row:
    """One line of the table (and one entry of results.json)."""

    name: str
    title: str
    baseline_label: str  # what the gateway is measured against
    unit: str
    target: str
    baseline: dict[str, Any] | None = None  # summary of per-round baseline figures
    gateway: dict[str, Any] | None = None  # summary of per-round gateway figures
    headline: str = ""  # the ratio (or delta) as printed
    headline_value: float = math.nan
    headline_spread: tuple[float, float] | None = None
    met: bool | None = None
    status: str = "ok"  # ok | not available | failed | skipped
    notes: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    def cell(self, s: dict[str, Any] | None, digits: int = 1) -> str:
        if not s:
            return "-"
        return (f"{fmt(s['median'], digits)} [{fmt(s['min'], digits)}–{fmt(s['max'], digits)}]"
                f" {self.unit}")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass

    def version(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    import gunicorn
    import urllib3

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "gunicorn": gunicorn.__version__,
        "urllib3": urllib3.__version__,
        "redis_server": version(["redis-server", "--version"]),
        "registry": version(["docker-registry", "--version"]),
        "nginx": version([shutil.which("nginx") or "/usr/sbin/nginx", "-v"]),
    }


def write_json(path: Path, rows: list[Row], meta: dict[str, Any], merge: bool = False,
               order: list[str] | None = None) -> None:
    """Write the results; with `merge` (a --only run), rows of other benchmarks already in
    the file are kept, so a partial run updates its rows instead of dropping the rest."""
    results = [asdict(r) for r in rows]
    if merge and path.exists():
        try:
            old = json.loads(path.read_text()).get("results", [])
        except ValueError:
            old = []
        fresh = {r["name"] for r in results}
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        for r in results:
            r.setdefault("detail", {})["measured_at"] = stamp
        results = [r for r in old if r.get("name") not in fresh] + results
        if order:
            rank = {n: i for i, n in enumerate(order)}
            results.sort(key=lambda r: rank.get(r.get("name"), len(rank)))
    payload = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "run": meta,
        "results": results,
    }
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, tuple | set):
        return list(value)
    return str(value)


def met_text(row: Row) -> str:
    if row.status != "ok":
        return row.status
    return "-" if row.met is None else ("yes" if row.met else "NO")


def table(rows: list[Row]) -> str:
    """The table as Markdown (readable on a terminal, pasted into BENCHMARKS.md as is)."""
    head = ["benchmark", "measured against", "baseline: median [min–max]",
            "gateway: median [min–max]", "headline (median [min–max] of rounds)", "target",
            "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.status not in ("ok",):
            lines.append(f"| {r.title} | {r.baseline_label} | - | - | {r.headline or '-'} | "
                         f"{r.target} | {r.status} |")
            continue
        lines.append(f"| {r.title} | {r.baseline_label} | {r.cell(r.baseline)} | "
                     f"{r.cell(r.gateway)} | {r.headline} | {r.target} | {met_text(r)} |")
    return "\n".join(lines)


def print_table(rows: list[Row]) -> None:
    print(table(rows))
    for r in rows:
        for note in r.notes:
            print(f"  - {r.name}: {note}")
    sys.stdout.flush()
