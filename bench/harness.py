"""Paired direct/gateway rounds with settling, CPU accounting and optional profiling."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psutil

from bench import load
from bench.config import Config
from bench.profile import Profile, print_top
from bench.stack import BenchStack, cpu_seconds, machine_busy
from bench.stats import paired_rounds


class CpuMeter:
    """CPU seconds used over a block by each part of the stack, by the benchmark client (this
    process and its load processes), and by everything else on the machine ("foreign": other
    jobs sharing the cores, which make a run noisy)."""

    def __init__(self, stack: BenchStack) -> None:
        self.stack = stack
        self.used: dict[str, float] = {}
        self.wall = 0.0

    @staticmethod
    def _client() -> float:
        """CPU seconds of this process (not its children: the services are its children) and
        of the load processes."""
        own = psutil.Process().cpu_times()
        return own.user + own.system + cpu_seconds(load.pids())

    def __enter__(self) -> CpuMeter:
        self._pids = self.stack.pids()
        self._before = {k: cpu_seconds([p]) for k, p in self._pids.items()}
        self._client0 = self._client()
        self._busy = machine_busy()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.used = {k: cpu_seconds([p]) - self._before[k] for k, p in self._pids.items()}
        self.used["client"] = self._client() - self._client0
        ours = sum(self.used.values())
        self.used["foreign"] = max(0.0, machine_busy() - self._busy - ours)

    def cores(self) -> dict[str, float]:
        """Average cores used by each part over the block."""
        return {k: round(v / (self.wall or 1.0), 2) for k, v in self.used.items()}


def rounds(stack: BenchStack, cfg: Config, name: str,
           run: Callable[[str, int], Any], profile_name: str | None = None,
           settle: bool = True, modes: tuple[str, ...] = ("direct", "gateway")
           ) -> dict[str, Any]:
    """`run(mode, round)` for direct and gateway, cfg.rounds times, alternating order; the
    first gateway phase is profiled when --profile is on. Returns {"direct": [...],
    "gateway": [...], "cores": {mode: [cores used per part, per phase]}}."""
    profiled = {"done": False}
    label = profile_name or name
    cores: dict[str, list[dict[str, float]]] = {m: [] for m in modes}

    def one(mode: str, r: int) -> Any:
        with CpuMeter(stack) as meter:
            if mode == "gateway" and cfg.profile and not profiled["done"]:
                profiled["done"] = True
                prof = Profile(label, stack.gateway.pid, True)
                with prof:
                    out = run(mode, r)
            else:
                prof = None
                out = run(mode, r)
        cores[mode].append(meter.cores())
        if prof is not None:
            print_top(label, prof.top())
            print_top(label, prof.top_gil(), "holding the GIL")
        return out

    out: dict[str, Any] = paired_rounds(cfg.rounds, one, modes=modes,
                                        between=stack.settle if settle else None)
    out["cores"] = cores
    return out


def annotate(row: Any, res: dict[str, Any]) -> Any:
    """Attach the CPU picture of the phases to a row; warn when other jobs shared the CPU."""
    cores = res.get("cores") or {}
    row.detail["cores_used"] = cores
    foreign = [c.get("foreign", 0.0) for phases in cores.values() for c in phases]
    if foreign:
        worst = max(foreign)
        row.detail["foreign_cores_max"] = worst
        if worst > 0.25:
            row.notes.append(f"other jobs on the machine used up to {worst:.2f} cores during "
                             "its phases: figures are noisier than usual")
    return row


def cpu_per_op(cores: list[dict[str, float]], rates: list[float], parts: tuple[str, ...]
               ) -> float:
    """Median milliseconds of CPU per operation used by `parts` (phases paired with rates)."""
    per = []
    for c, rate in zip(cores, rates, strict=False):
        if rate:
            per.append(sum(c.get(p, 0.0) for p in parts) / rate * 1000.0)
    per.sort()
    return per[len(per) // 2] if per else float("nan")
