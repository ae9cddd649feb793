"""Promotions per second with 16 concurrent CI clients, against the registry work a promotion
cannot avoid: one manifest GET plus one manifest PUT (pairs per second, same concurrency)."""

from __future__ import annotations

import statistics
from typing import Any

from bench import load
from bench.config import Config
from bench.harness import annotate, cpu_per_op, rounds
from bench.images import image, push_image
from bench.report import Row
from bench.stack import BenchStack
from bench.stats import latency_summary, summary

POLICY = {"name": "bench", "repositories": ["bench/*"], "promotion": {"develop": {}}}
TAGS = ["v1.0.0", "v1.0.1"]
ENV = "develop"


def setup(stack: BenchStack, clients: int) -> tuple[list[str], list[str], str]:
    """The bench policy; two images in each client's repository (pushed through the gateway,
    as CI does) and in as many floor repositories (pushed straight to the registry)."""
    api = stack.api()
    status, body = api.json("PUT", "/api/v1/policies/bench", POLICY)
    if status != 200:
        raise RuntimeError(f"policy PUT answered {status}: {body}")
    api.close()
    images = [image("bench-promo-a"), image("bench-promo-b")]
    gw = stack.v2("gateway", timeout=60)
    direct = stack.v2("direct", timeout=60)
    repos = [f"bench/promo-{i}" for i in range(clients)]
    floors = [f"floor/app-{i}" for i in range(clients)]
    shared = "bench/promo-shared"
    for repo in [*repos, shared]:
        for img, tag in zip(images, TAGS, strict=True):
            push_image(gw, repo, img, tag)
    for repo in floors:
        for img, tag in zip(images, TAGS, strict=True):
            push_image(direct, repo, img, tag)
    gw.close()
    direct.close()
    return repos, floors, shared


def run(stack: BenchStack, cfg: Config) -> Row:
    clients = cfg.promo_clients
    repos, floors, shared = setup(stack, clients)
    per_mode: dict[str, list[dict[str, Any]]] = {"direct": [], "gateway": []}

    def phase(mode: str, r: int) -> float:
        if mode == "gateway":
            task = "bench.tasks:promote"
            args = {"port": stack.gw_port, "auth": stack.api_auth, "repositories": repos,
                    "tags": TAGS, "environment": ENV}
        else:
            task = "bench.tasks:registry_pair"
            args = {"port": stack.reg_port, "repositories": floors, "tags": TAGS,
                    "environment": ENV}
        out = load.run(task, args, clients, cfg.phase_seconds, warmup=1.0, processes=2)
        if out["errors"]:
            raise RuntimeError(f"{mode}: {len(out['errors'])} errors, first: {out['errors'][0]}")
        lat = [x for v in out["lat"].values() for x in v]
        rate = len(lat) / cfg.phase_seconds
        per_mode[mode].append({"rate": rate, **latency_summary(lat)})
        return rate

    res = rounds(stack, cfg, "promotions", phase)
    ratio = [g / d for g, d in zip(res["gateway"], res["direct"], strict=True)]
    rs = summary(ratio)
    row = Row("promotions", f"promotions per second, {clients} concurrent CI clients",
              "registry GET+PUT manifest pairs/s", "/s", "≥ 0.5 of the pair rate",
              baseline=summary(res["direct"]), gateway=summary(res["gateway"]),
              headline=f"{rs['median']:.3f} [{rs['min']:.3f}–{rs['max']:.3f}] of pairs/s",
              headline_value=rs["median"], headline_spread=(rs["min"], rs["max"]),
              met=rs["median"] >= 0.5)
    p95 = {m: statistics.median(s["p95_ms"] for s in v) for m, v in per_mode.items()}
    row.notes.append(f"each client promotes its own repository (alternating two digests into "
                     f"'{ENV}'); p95 per promotion {p95['gateway']:.1f} ms, per GET+PUT pair "
                     f"{p95['direct']:.1f} ms")
    rates = {m: [x["rate"] for x in v] for m, v in per_mode.items()}
    cpu = {
        "gateway per promotion": cpu_per_op(res["cores"]["gateway"], rates["gateway"],
                                            ("gateway",)),
        "registry per promotion": cpu_per_op(res["cores"]["gateway"], rates["gateway"],
                                             ("registry",)),
        "redis per promotion": cpu_per_op(res["cores"]["gateway"], rates["gateway"],
                                          ("redis",)),
        "worker per promotion": cpu_per_op(res["cores"]["gateway"], rates["gateway"],
                                           ("worker",)),
        "bare registry per pair": cpu_per_op(res["cores"]["direct"], rates["direct"],
                                             ("bare_registry",)),
    }
    row.notes.append("CPU (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
    row.detail["cpu_ms"] = cpu
    contention = shared_repository(stack, cfg, shared)
    row.notes.append(f"all {clients} clients on one repository (one lock): "
                     f"{contention['rate']:.1f}/s, p95 {contention['p95_ms']:.0f} ms; "
                     f"registry tag, pointer and newest record agree: "
                     f"{'yes' if contention['consistent'] else 'NO'}")
    row.detail.update({"per_round": per_mode, "ratios": ratio,
                       "same_repository": contention})
    return annotate(row, res)


def shared_repository(stack: BenchStack, cfg: Config, repository: str) -> dict[str, Any]:
    """The same 16 clients all promoting one (repository, environment): serialized by its lock.
    Then check the registry tag, the Redis pointer and the newest history record agree."""
    stack.settle()
    args = {"port": stack.gw_port, "auth": stack.api_auth, "repositories": [repository],
            "tags": TAGS, "environment": ENV}
    out = load.run("bench.tasks:promote", args, cfg.promo_clients, cfg.phase_seconds,
                   warmup=1.0, processes=2)
    lat = [x for v in out["lat"].values() for x in v]
    api = stack.api()
    _, env = api.json("GET", f"/api/v1/environments?repository={repository}")
    _, hist = api.json("GET", f"/api/v1/promotions?repository={repository}&environment={ENV}"
                       "&limit=1")
    api.close()
    reg = stack.v2("direct")
    status, headers, _ = reg.request(
        "HEAD", f"/v2/{repository}/manifests/{ENV}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    reg.close()
    pointer = next((e["digest"] for e in env["environments"] if e["name"] == ENV), None)
    newest = hist["items"][0]["digest"] if hist and hist.get("items") else None
    tag = headers.get("Docker-Content-Digest") if status == 200 else None
    return {"rate": len(lat) / cfg.phase_seconds, **latency_summary(lat),
            "errors": len(out["errors"]), "first_error": (out["errors"] or [None])[0],
            "consistent": bool(pointer) and pointer == newest == tag,
            "registry_tag": tag, "pointer": pointer, "newest_record": newest}
