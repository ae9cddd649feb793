"""Manifest benchmarks: GET/HEAD p95 under 50 clients, tag PUT p95, policy evaluation."""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

from bench import load
from bench.config import Config
from bench.harness import annotate, cpu_per_op, rounds
from bench.images import image, push_image
from bench.report import Row
from bench.stack import BenchStack
from bench.stats import latency_summary, quantile, summary
from testkit import oci

REPO_GET = "bench/manifest"
REPO_PUT = "bench/manifest-put"
MODES = ("direct", "gateway", "gateway-quiet")


def get_head(stack: BenchStack, cfg: Config) -> Row:
    """50 closed-loop clients (2 processes × 25 threads, keep-alive) alternating GET and HEAD
    of one manifest by tag; p95 of all requests per phase."""
    setup = stack.v2("direct")
    push_image(setup, REPO_GET, image("bench-manifest"), "v1.0.0")
    setup.close()
    path = f"/v2/{REPO_GET}/manifests/v1.0.0"
    per_mode: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}

    def run(mode: str, r: int) -> float:
        args = {"port": stack.port(mode), "path": path, "auth": stack.v2_auth_for(mode)}
        out = load.run("bench.tasks:manifest_get_head", args, cfg.manifest_clients,
                       cfg.phase_seconds, warmup=1.0, processes=2)
        if out["errors"]:
            raise RuntimeError(f"{mode}: {len(out['errors'])} errors, first: {out['errors'][0]}")
        every = [x for v in out["lat"].values() for x in v]
        stats = {"all": latency_summary(every),
                 **{k: latency_summary(v) for k, v in out["lat"].items()},
                 "rps": len(every) / cfg.phase_seconds}
        per_mode[mode].append(stats)

        return stats["all"]["p95_ms"]

    res = rounds(stack, cfg, "manifest_get_head", run, modes=MODES)
    d, g = summary(res["direct"]), summary(res["gateway"])
    ratio = [gv / dv for gv, dv in zip(res["gateway"], res["direct"], strict=True)]
    delta = [gv - dv for gv, dv in zip(res["gateway"], res["direct"], strict=True)]
    rs, ds = summary(ratio), summary(delta)
    met = rs["median"] <= 1.0  # issue 20: faster than the registry
    row = Row("manifest_get_head", f"manifest GET/HEAD p95, {cfg.manifest_clients} concurrent "
              "clients", "direct registry", "ms", "≤ 1.0× direct (issue 20)",
              baseline=d, gateway=g,
              headline=f"{rs['median']:.2f}× [{rs['min']:.2f}–{rs['max']:.2f}], "
                       f"+{ds['median']:.2f} ms",
              headline_value=rs["median"], headline_spread=(rs["min"], rs["max"]), met=met)
    rps = {m: statistics.median(s["rps"] for s in v) for m, v in per_mode.items()}
    quiet = summary(res["gateway-quiet"])
    quiet_ratio = summary([q / d for q, d in zip(res["gateway-quiet"], res["direct"],
                                                strict=True)])
    row.notes.append(f"throughput (median req/s): direct {rps['direct']:,.0f}, gateway "
                     f"{rps['gateway']:,.0f}; closed loop, so p95 ≈ queueing at that rate")
    row.notes.append(f"without registry notifications (a second gateway in front of the bare "
                     f"registry): p95 {quiet['median']:.1f} ms, {quiet_ratio['median']:.2f}× "
                     f"direct, {rps['gateway-quiet']:,.0f} req/s — the rest is the pull events "
                     "the registry posts to the webhook for every manifest GET/HEAD")
    rates = {m: [x["rps"] for x in v] for m, v in per_mode.items()}
    cpu = {
        "bare registry": cpu_per_op(res["cores"]["direct"], rates["direct"],
                                    ("bare_registry",)),
        "gateway": cpu_per_op(res["cores"]["gateway"], rates["gateway"], ("gateway",)),
        "registry behind it": cpu_per_op(res["cores"]["gateway"], rates["gateway"],
                                         ("registry",)),
        "worker": cpu_per_op(res["cores"]["gateway"], rates["gateway"], ("worker",)),
        "quiet gateway": cpu_per_op(res["cores"]["gateway-quiet"], rates["gateway-quiet"],
                                    ("gateway_quiet",)),
    }
    row.notes.append("CPU per request (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                          cpu.items()))
    row.detail = {"per_round": per_mode, "ratios": ratio, "delta_ms": delta,
                  "gateway_quiet_p95_ms": res["gateway-quiet"], "cpu_ms_per_request": cpu}
    return annotate(row, res)


def put(stack: BenchStack, cfg: Config) -> Row:
    """One client PUTting the same small manifest under distinct semver tags (immutable class,
    so the gateway checks the tag's current digest), back to back; p95 per phase."""
    img = image("bench-manifest-put")
    setup = stack.v2("direct")
    push_image(setup, REPO_PUT, img, "base")
    setup.close()
    body = img.manifest_bytes()
    headers = {"Content-Type": oci.OCI_MANIFEST}
    per_mode: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}

    blobs = list(img.blobs())

    def run(mode: str, r: int) -> float:
        # a fresh repository per phase (blobs mounted from the first one), so both sides
        # start from the same empty tag list
        repo = f"{REPO_PUT}-{mode}-{r}"
        setup = stack.v2("direct")
        for digest in blobs:
            status, _, data = setup.request(
                "POST", f"/v2/{repo}/blobs/uploads/?mount={digest}&from={REPO_PUT}")
            if status != 201:
                raise RuntimeError(f"blob mount answered {status}: {data[:200]!r}")
        setup.close()
        http_ = stack.v2(mode, timeout=60)
        lat = []
        for i in range(cfg.put_count + 5):
            t0 = time.perf_counter()
            status, _, data = http_.request(
                "PUT", f"/v2/{repo}/manifests/v1.{r}.{i}", body, headers)
            elapsed = time.perf_counter() - t0
            if status != 201:
                raise RuntimeError(f"{mode} PUT answered {status}: {data[:300]!r}")
            if i >= 5:  # the first few warm the connection and caches
                lat.append(elapsed)
        http_.close()
        stats = latency_summary(lat)
        per_mode[mode].append(stats)
        return stats["p95_ms"]

    res = rounds(stack, cfg, "manifest_put", run, modes=MODES)
    delta = [gv - dv for gv, dv in zip(res["gateway"], res["direct"], strict=True)]
    ds = summary(delta)
    row = Row("manifest_put", "manifest PUT (tag) with policy evaluation, p95",
              "direct registry PUT", "ms", "+ ≤ 5 ms",
              baseline=summary(res["direct"]), gateway=summary(res["gateway"]),
              headline=f"+{ds['median']:.2f} ms [{ds['min']:.2f}–{ds['max']:.2f}]",
              headline_value=ds["median"], headline_spread=(ds["min"], ds["max"]),
              met=ds["median"] <= 5.0)
    p50 = {m: statistics.median(s["p50_ms"] for s in v) for m, v in per_mode.items()}
    row.notes.append(f"p50: direct {p50['direct']:.2f} ms, gateway {p50['gateway']:.2f} ms "
                     f"({cfg.put_count} sequential PUTs of new tags per phase)")
    quiet = summary([q - d for q, d in zip(res["gateway-quiet"], res["direct"], strict=True)])
    row.notes.append(f"without registry notifications (second gateway, bare registry): "
                     f"+{quiet['median']:.2f} ms at p95, p50 {p50['gateway-quiet']:.2f} ms")
    row.detail = {"per_round": per_mode, "delta_ms": delta,
                  "gateway_quiet_p95_ms": res["gateway-quiet"],
                  "breakdown_us": governance_breakdown(stack)}
    return annotate(row, res)


def governance_breakdown(stack: BenchStack, n: int = 300) -> dict[str, Any]:
    """In-process timing of each step the gateway adds to a tag PUT, against the bench's real
    Redis and registry (p50/p95 in µs): where the added milliseconds go."""
    from service.config import Settings
    from service.core import governance
    from service.domain.policy import evaluate_push
    from service.services import Services

    svc = Services.build(Settings.from_env(stack.env))
    digest = oci.sha256_digest(b"breakdown")
    steps: dict[str, list[float]] = {k: [] for k in (
        "tag lock acquire+release", "policy_for (policies.all)", "current_digest (unknown tag)",
        "evaluate_push", "tags.set", "check_push total")}
    perf = time.perf_counter
    for i in range(n):
        tag = f"v7.7.{i}-{int(time.time() * 1000) % 100000}"
        t0 = perf()
        lock = svc.tags.lock(REPO_PUT, tag)
        lock.acquire()
        lock.release()
        t1 = perf()
        policy = governance.policy_for(svc, REPO_PUT)
        t2 = perf()
        current = governance.current_digest(svc, REPO_PUT, tag)
        t3 = perf()
        evaluate_push(policy, REPO_PUT, tag, digest, current)
        t4 = perf()
        svc.tags.set("bench/breakdown", tag, digest)
        t5 = perf()
        governance.check_push(svc, REPO_PUT, tag + "x", digest)
        t6 = perf()
        for k, v in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5),
                        strict=True):
            steps[k].append(v)
    return {k: {"p50": round(quantile(v, 0.5) * 1e6, 1), "p95": round(quantile(v, 0.95) * 1e6,
                                                                          1)}
            for k, v in steps.items()}


def policy_eval(cfg: Config) -> Row:
    """`service.domain.policy.evaluate_push` alone, in this process: p95 over a mix of tags
    (semver, git-sha, latest, other, environment, denied), default and a regex policy."""
    from service.domain.policy import DEFAULT_POLICY, evaluate_push
    from service.domain.schemas.policy import load_policy

    custom = load_policy({
        "name": "bench-eval", "repositories": ["team/*"],
        "push": {"allow": ["semver", "git-sha", "latest", "regex:^feature-[a-z0-9-]+$"],
                 "deny": ["regex:^tmp-", "regex:.*-dirty$"],
                 "immutable": ["semver", "git-sha"]},
        "promotion": {"develop": {}, "staging": {"from": "develop", "tags": ["semver"]}},
    })
    digest = oci.sha256_digest(b"a")
    other = oci.sha256_digest(b"b")
    cases = [("v1.2.3", None), ("1.2.3-rc.1", digest), ("v2.0.0", other),
             ("git-sha-0123abc", None), ("0123456789abcdef0123456789abcdef01234567", other),
             ("latest", digest), ("feature-login-form", None), ("tmp-x", None),
             ("build-7-dirty", None), ("production", None), ("staging", None)]
    lat: list[float] = []
    n = 2000 if cfg.quick else 10000
    perf = time.perf_counter
    for policy in (DEFAULT_POLICY, custom):
        for tag, current in cases:  # warm caches (compiled matchers) first
            evaluate_push(policy, "team/app", tag, digest, current)
    for i in range(n):
        policy = DEFAULT_POLICY if i % 2 else custom
        tag, current = cases[i % len(cases)]
        t0 = perf()
        evaluate_push(policy, "team/app", tag, digest, current)
        lat.append(perf() - t0)
    us = [x * 1e6 for x in lat]
    p95 = quantile(us, 0.95)
    row = Row("policy_eval", "policy evaluation alone (evaluate_push, in-process), p95",
              "—", "µs", "< 2 ms (issue 3)",
              gateway={"median": quantile(us, 0.5), "min": min(us), "max": max(us)},
              headline=f"p95 {p95:.1f} µs, p99 {quantile(us, 0.99):.1f} µs",
              headline_value=p95 / 1000.0, met=p95 < 2000)
    row.notes.append("gateway column: p50 [min–max] of single evaluations")
    row.detail = {"p50_us": quantile(us, 0.5), "p95_us": p95, "p99_us": quantile(us, 0.99),
                  "calls": n}
    return row


# Worst inputs for the grammars and for policy regexes whose shape backtracks exponentially in
# a backtracking engine (RE2 evaluates policy regexes; the grammars are written to avoid
# nested quantifiers). Moved here from unit tests, where a wall-clock bound is flaky.
HOSTILE_GRAMMAR = [("repository", "a-" * 120 + "!"), ("repository", "a" * 250 + "!"),
                   ("tag", "a" * 127 + "!")]
HOSTILE_REGEXES = ["^(aa|a)*$", "^(a+)+$", "^(a|a?)+$", "^(\\w+\\s?)*$", "(x+x+)+y",
                   "^([a-z]+-)*[a-z]+$"]


def regex_worst_case(cfg: Config) -> Row:
    """Slowest single evaluation of the repository/tag grammar and of policy regexes on the
    inputs that make a backtracking engine explode (in-process, best of N per case)."""
    from service.domain.tags import compile_matcher, valid_repository, valid_tag

    repeats = 50 if cfg.quick else 200
    perf = time.perf_counter
    cases: list[tuple[str, Any]] = [
        (f"{kind} {text[:12]}…", (valid_repository if kind == "repository" else valid_tag, text))
        for kind, text in HOSTILE_GRAMMAR]
    for pattern in HOSTILE_REGEXES:
        matcher = compile_matcher("regex:" + pattern)
        for tag in ("a" * 39 + "b", "a" * 127 + "!", "x" * 127):
            cases.append((f"regex {pattern} on {tag[:6]}…({len(tag)})",
                          (lambda t, m=matcher: m(t, ()), tag)))
    worst: dict[str, float] = {}
    for label, (fn, arg) in cases:
        best = math.inf
        for _ in range(repeats):
            t0 = perf()
            fn(arg)
            best = min(best, perf() - t0)
        worst[label] = best * 1e6
    slowest = max(worst, key=worst.__getitem__)
    us = list(worst.values())
    row = Row("regex_worst_case", "grammar and policy-regex worst case (hostile inputs), "
              "slowest case", "—", "µs", "< 1 ms",
              gateway={"median": quantile(us, 0.5), "min": min(us), "max": max(us)},
              headline=f"slowest {worst[slowest]:.1f} µs ({slowest})",
              headline_value=worst[slowest] / 1000.0, met=worst[slowest] < 1000)
    row.notes.append("gateway column: per-case best-of-N times, median [min–max]")
    row.detail = {"cases_us": {k: round(v, 2) for k, v in worst.items()}, "repeats": repeats}
    return row
