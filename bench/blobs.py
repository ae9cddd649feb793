"""Blob transfer benchmarks: pull (single stream, 16 streams), chunked push, gateway RSS."""

from __future__ import annotations

import threading
import time

from bench.client import MIB, Http, digest_of, push_blob
from bench.config import Config
from bench.harness import CpuMeter, annotate, rounds
from bench.report import Row
from bench.stack import BenchStack, PeakRss
from bench.stats import ratios, summary

REPO = "bench/blobs"


def _mib(n: int) -> str:
    return f"{n // MIB} MiB" if n < 1024 * MIB else f"{n / (1024 * MIB):g} GiB"


class Blobs:
    """Blobs pushed once (straight to the registry) for the pull benchmarks."""

    def __init__(self, stack: BenchStack, cfg: Config) -> None:
        self.stack = stack
        self.cfg = cfg
        self._big: str | None = None
        self._streams: list[str] | None = None

    def ensure(self, seed: str, size: int) -> str:
        digest = digest_of(seed, size)
        http_ = self.stack.v2("direct")
        status, _, _ = http_.request("HEAD", f"/v2/{REPO}/blobs/{digest}")
        if status != 200:
            push_blob(http_, REPO, seed, size, digest)
        http_.close()
        return digest

    def big(self) -> str:
        if self._big is None:
            self._big = self.ensure(f"pull-{self.cfg.pull_size}", self.cfg.pull_size)
        return self._big

    def streams(self) -> list[str]:
        if self._streams is None:
            self._streams = [self.ensure(f"stream-{i}-{self.cfg.stream_size}",
                                         self.cfg.stream_size) for i in range(self.cfg.streams)]
        return self._streams


def _cpu_note(meters: list[CpuMeter], size: int) -> dict[str, float]:
    """Median CPU seconds per GiB moved, per process."""
    if not meters:
        return {}
    keys = meters[0].used.keys()
    out = {}
    for k in keys:
        vals = sorted(m.used.get(k, 0.0) for m in meters)
        out[k] = round(vals[len(vals) // 2] * (1024 * MIB) / size, 3)
    return out


def _cpu_line(per_gib: dict[str, dict[str, float]], via: str = "gateway") -> str:
    d, g = per_gib.get("direct", {}), per_gib.get(via, {})
    hop = (f"nginx {g.get('nginx', 0):.2f} + gateway {g.get('gateway', 0):.2f}"
           if via == "front" else f"gateway {g.get('gateway', 0):.2f}")
    return (f"CPU s per GiB moved: direct = bare registry {d.get('bare_registry', 0):.2f} + "
            f"client {d.get('client', 0):.2f}; via {VIA[via]} = {hop}"
            f" + registry {g.get('registry', 0):.2f} + client {g.get('client', 0):.2f}")


def _throughput_row(name: str, title: str, target: float, res: dict, via: str,
                    meters: dict[str, list[CpuMeter]], moved: int, peaks: list[int]) -> Row:
    """The row of a throughput benchmark: per-round ratios to direct, CPU per GiB moved
    (`moved` bytes per phase) and the gateway's RSS growth."""
    ratio = ratios(res[via], res["direct"])
    rs = summary(ratio)
    row = Row(name, title, "direct registry", "MiB/s", f"≥ {target:.2f} of direct",
              baseline=summary(res["direct"]), gateway=summary(res[via]),
              headline=f"{rs['median']:.3f} [{rs['min']:.3f}–{rs['max']:.3f}] of direct",
              headline_value=rs["median"], headline_spread=(rs["min"], rs["max"]),
              met=rs["median"] >= target)
    row.detail = {"ratios": ratio, "direct_rounds": res["direct"], "gateway_rounds": res[via],
                  "cpu_s_per_gib": {m: _cpu_note(v, moved) for m, v in meters.items()},
                  "gateway_rss_growth_mib": [round(p / MIB, 1) for p in peaks]}
    row.notes.append(_cpu_line(row.detail["cpu_s_per_gib"], via))
    return annotate(row, res)


# How the gateway side of a pull benchmark is deployed: the default (the gateway streams the
# bytes itself), or the front-proxy deployment (nginx from `tagwarden nginx-config`: the
# gateway authorizes each blob GET, nginx sends the file from the registry's storage).
VIA = {"gateway": "gateway (from the storage: copied to this loopback client)",
       "front": "nginx front proxy + gateway"}
SUFFIX = {"gateway": "", "front": "_front"}
TITLE = {"gateway": "", "front": ", front-proxy deployment (nginx serves authorized blobs)"}


def pull_single(stack: BenchStack, cfg: Config, blobs: Blobs, via: str = "gateway") -> Row:
    """One client, one 512 MiB blob, read with 1 MiB recv_into."""
    digest = blobs.big()
    size = cfg.pull_size
    path = f"/v2/{REPO}/blobs/{digest}"
    meters: dict[str, list[CpuMeter]] = {"direct": [], via: []}
    peaks: list[int] = []

    repeat = cfg.pull_repeat

    def run(mode: str, r: int) -> float:
        http_ = stack.v2(mode)
        base = stack.gateway_rss()
        with PeakRss(stack.gateway.pid) as peak, CpuMeter(stack) as meter:
            for _ in range(repeat):  # back to back on one keep-alive connection
                got = http_.download(path)
                if got != size:
                    raise RuntimeError(f"{mode} pull got {got} bytes, expected {size}")
        http_.close()
        meters[mode].append(meter)
        if mode != "direct":
            peaks.append(peak.peak - base)
        return repeat * size / MIB / meter.wall

    name = "blob_pull_single" + SUFFIX[via]
    res = rounds(stack, cfg, name, run, modes=("direct", via))
    row = _throughput_row(name, f"blob pull, {_mib(size)}, single stream{TITLE[via]}", 0.95,
                          res, via, meters, size * repeat, peaks)
    row.notes.insert(0, f"each phase pulls the blob {repeat}× back to back; the client reads "
                     "with 1 MiB recv_into and shares the 2 cores with registry and gateway")
    return row


def _concurrent(stack: BenchStack, mode: str, digests: list[str], size: int) -> float:
    """All streams started together; aggregate MiB/s over the wall time of the slowest."""
    barrier = threading.Barrier(len(digests) + 1)
    errors: list[str] = []
    conns = [stack.v2(mode) for _ in digests]

    def one(http_: Http, digest: str) -> None:
        barrier.wait()
        try:
            got = http_.download(f"/v2/{REPO}/blobs/{digest}")
            if got != size:
                errors.append(f"got {got} bytes")
        except Exception as exc:  # noqa: BLE001
            errors.append(str(exc))

    threads = [threading.Thread(target=one, args=(c, d)) for c, d in zip(conns, digests,
                                                                         strict=True)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    for c in conns:
        c.close()
    if errors:
        raise RuntimeError(f"{mode} concurrent pull failed: {errors[:3]}")
    return len(digests) * size / MIB / wall


def pull_concurrent(stack: BenchStack, cfg: Config, blobs: Blobs, via: str = "gateway") -> Row:
    """16 clients pulling 16 different 64 MiB blobs at once."""
    digests = blobs.streams()
    size = cfg.stream_size
    meters: dict[str, list[CpuMeter]] = {"direct": [], via: []}
    peaks: list[int] = []

    def run(mode: str, r: int) -> float:
        base = stack.gateway_rss()
        with PeakRss(stack.gateway.pid) as peak, CpuMeter(stack) as meter:
            rate = _concurrent(stack, mode, digests, size)
        meters[mode].append(meter)
        if mode != "direct":
            peaks.append(peak.peak - base)
        return rate

    name = "blob_pull_concurrent" + SUFFIX[via]
    res = rounds(stack, cfg, name, run, modes=("direct", via))
    return _throughput_row(
        name, f"blob pull, {cfg.streams} concurrent streams of {_mib(size)}{TITLE[via]}",
        0.95 if via == "gateway" else 0.90,
        res, via, meters, size * len(digests), peaks)


def push(stack: BenchStack, cfg: Config) -> Row:
    """POST + one chunked PATCH streaming 512 MiB in 1 MiB chunks + PUT ?digest=."""
    size = cfg.push_size
    # every push gets its own content, hashed now so the timed part only moves bytes
    seeds = {(m, r): f"push-{m}-{r}-{size}" for m in ("direct", "gateway")
             for r in range(cfg.rounds)}
    digests = {k: digest_of(s, size) for k, s in seeds.items()}
    meters: dict[str, list[CpuMeter]] = {"direct": [], "gateway": []}
    peaks: list[int] = []

    def run(mode: str, r: int) -> float:
        http_ = stack.v2(mode)
        base = stack.gateway_rss()
        with PeakRss(stack.gateway.pid) as peak, CpuMeter(stack) as meter:
            push_blob(http_, "bench/push", seeds[(mode, r)], size, digests[(mode, r)])
        http_.close()
        meters[mode].append(meter)
        if mode == "gateway":
            peaks.append(peak.peak - base)
        return size / MIB / meter.wall

    res = rounds(stack, cfg, "blob_push", run)
    return _throughput_row("blob_push", f"blob push (chunked PATCH + PUT), {_mib(size)}", 0.90,
                           res, "gateway", meters, size, peaks)


def rss(stack: BenchStack, cfg: Config, blobs: Blobs) -> Row:
    """Gateway RSS (gunicorn master + workers) sampled every 20 ms while 1 GiB goes through it:
    a 1 GiB chunked push, the same blob pulled back, and 16 concurrent pulls; growth over the
    RSS measured just before each transfer (after the other benchmarks warmed it up)."""
    size = cfg.rss_size
    seed = f"rss-{size}"
    digest = digest_of(seed, size)
    parts: dict[str, float] = {}
    baselines: dict[str, float] = {}
    # warm-up so imports, pools and threads exist before the baseline is taken
    warm = stack.v2("gateway")
    warm.request("GET", "/v2/")
    warm.close()

    def measure(label: str, fn: object) -> None:
        stack.settle()
        base = stack.gateway_rss()
        with PeakRss(stack.gateway.pid) as peak:
            fn()  # type: ignore[operator]
        baselines[label] = base / MIB
        parts[label] = max(0, peak.peak - base) / MIB

    def do_push() -> None:
        h = stack.v2("gateway")
        push_blob(h, "bench/rss", seed, size, digest)
        h.close()

    def do_pull() -> None:
        h = stack.v2("gateway")
        got = h.download(f"/v2/bench/rss/blobs/{digest}")
        h.close()
        if got != size:
            raise RuntimeError(f"rss pull got {got} bytes")

    streams = blobs.streams()
    per = max(1, size // cfg.stream_size)
    chosen = (streams * ((per // len(streams)) + 1))[:min(per, cfg.streams)]

    def do_concurrent() -> None:
        _concurrent(stack, "gateway", chosen, cfg.stream_size)

    measure(f"push {_mib(size)}", do_push)
    measure(f"pull {_mib(size)}", do_pull)
    measure(f"{len(chosen)} × {_mib(cfg.stream_size)} concurrent pulls", do_concurrent)
    worst = max(parts.values())
    row = Row("gateway_rss", f"gateway peak RSS while {_mib(size)} streams through",
              "RSS before the transfer", "MiB", "grows < 64 MiB",
              headline=f"+{worst:.1f} MiB (worst of: " + ", ".join(
                  f"{k} +{v:.1f}" for k, v in parts.items()) + ")",
              headline_value=worst, met=worst < 64)
    row.baseline = {"median": min(baselines.values()), "min": min(baselines.values()),
                    "max": max(baselines.values())}
    row.gateway = {"median": min(baselines.values()) + worst,
                   "min": min(baselines.values()) + min(parts.values()),
                   "max": max(baselines.values()) + worst}
    row.detail = {"growth_mib": parts, "baseline_mib": baselines,
                  "workers": stack.workers, "threads": stack.threads}
    return row
