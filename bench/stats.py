"""Small statistics helpers: quantiles, spread, paired rounds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile (q in 0..1) of a non-empty sequence."""
    if not values:
        return math.nan
    data = sorted(values)
    if len(data) == 1:
        return data[0]
    pos = q * (len(data) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max, IQR of a set of per-round figures."""
    if not values:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "q1": quantile(values, 0.25),
        "q3": quantile(values, 0.75),
        "n": len(values),
    }


def latency_summary(samples: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max of latency samples (seconds in, milliseconds out)."""
    ms = [s * 1000.0 for s in samples]
    return {
        "p50_ms": quantile(ms, 0.50),
        "p95_ms": quantile(ms, 0.95),
        "p99_ms": quantile(ms, 0.99),
        "max_ms": max(ms) if ms else math.nan,
        "count": len(ms),
    }


def paired_rounds(rounds: int, run: Callable[[str, int], Any],
                  modes: tuple[str, ...] = ("direct", "gateway"),
                  between: Callable[[], None] | None = None) -> dict[str, list[Any]]:
    """Run `run(mode, round)` for both modes each round, alternating which goes first
    (so slow drift of the machine does not favour one side); returns {mode: [results]}."""
    out: dict[str, list[Any]] = {m: [] for m in modes}
    for r in range(rounds):
        order = modes if r % 2 == 0 else modes[::-1]
        for mode in order:
            if between is not None:
                between()
            out[mode].append(run(mode, r))
    return out


def ratios(gateway: Sequence[float], direct: Sequence[float]) -> list[float]:
    """Per-round gateway/direct ratios (rounds are paired in time)."""
    return [g / d if d else math.nan for g, d in zip(gateway, direct, strict=False)]


def fmt(value: float, digits: int = 2) -> str:
    """A number for the table (nan → '-')."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"
