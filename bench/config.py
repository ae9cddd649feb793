"""Run-wide settings: sizes, durations and rounds for a full or a --quick run."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class Config:
    quick: bool = False
    rounds: int = 5
    profile: bool = False
    # blobs
    pull_size: int = 512 * MIB
    pull_repeat: int = 3
    streams: int = 16
    stream_size: int = 64 * MIB
    push_size: int = 512 * MIB
    rss_size: int = 1024 * MIB
    # latency / rate phases (seconds per phase, after a 1 s warm-up)
    phase_seconds: float = 5.0
    manifest_clients: int = 50
    put_count: int = 200
    promo_clients: int = 16
    # history
    history_big: int = 1_000_000
    history_small: int = 100
    history_requests: int = 400
    # webhooks
    e2e_samples: int = 15
    # scan
    scan_size: int = 500 * MIB
    scan_layers: int = 5


def make(quick: bool, rounds: int | None, profile: bool) -> Config:
    if quick:
        cfg = Config(quick=True, rounds=3, profile=profile, pull_size=256 * MIB, pull_repeat=2,
                     stream_size=16 * MIB, push_size=128 * MIB, rss_size=256 * MIB,
                     phase_seconds=3.0, put_count=60, history_big=200_000,
                     history_requests=150, e2e_samples=6, scan_size=100 * MIB)
    else:
        cfg = Config(profile=profile)
    if rounds:
        from dataclasses import replace

        cfg = replace(cfg, rounds=rounds)
    return cfg
