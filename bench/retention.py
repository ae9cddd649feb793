"""Retention's speed: digests evaluated per second on a repository with 10,000 tags.

What is measured: `service.core.retention.plan` for one repository, in this process, against the
bench's real Redis: the snapshot (tag map, bindings, pointers, the distinct digests of each
environment's history, push times, cached manifest references, active scans, intents) and the
selection with every reason. The registry is not asked anything (every manifest's references
are pre-seeded in Redis, as after the first run; the registry stand-in fails if called), and
nothing is deleted: deletion is one registry DELETE per digest, the registry's speed, not
retention's. Also reported: the pure selection (`service.domain.retention.select`) alone."""

from __future__ import annotations

import random
import time
from types import SimpleNamespace
from typing import Any

from bench.config import Config
from bench.report import Row
from bench.stack import BenchStack
from bench.stats import summary

REPO = "bench/retention"
TAGS = 10_000
UNTAGGED = 2_000
PROMOTIONS = 100  # per environment
DAY = 86400.0


class NoRegistry:
    """The registry must not be asked during the measured step."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"retention bench called the registry ({name})")


def digest(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def services(stack: BenchStack) -> Any:
    from service.store.approvals import ApprovalStore
    from service.store.bindings import TagBindings
    from service.store.environments import EnvironmentStore
    from service.store.manifests import ManifestRefs
    from service.store.promotions import PromotionStore
    from service.store.referrers import ReferrerIndex
    from service.store.retention import RetentionStore
    from service.store.scans import ScanStore
    from service.store.tagmap import TagMap

    r = stack.redis()
    return SimpleNamespace(redis=r, tags=TagMap(r), bindings=TagBindings(r),
                           environments=EnvironmentStore(r), promotions=PromotionStore(r),
                           manifests=ManifestRefs(r), retention=RetentionStore(r),
                           scans=ScanStore(r), referrers=ReferrerIndex(r),
                           approvals=ApprovalStore(r), registry=NoRegistry())


def seed(svc: Any, now: float) -> None:
    """10,000 tags (60 % semver, 20 % git-sha, 20 % other) on 10,000 digests, 2,000 untagged
    digests, push times over 90 days, 100 promotions per environment."""
    rng = random.Random(19)
    times = {}
    for n in range(TAGS + UNTAGGED):
        d = digest(n + 1)
        times[d] = now - rng.uniform(0, 90 * DAY)
        svc.manifests.put(REPO, d, {"index": False, "children": [],
                                    "blobs": [digest(10**7 + 2 * n), digest(10**7 + 2 * n + 1)]})
    svc.retention.set_pushed(REPO, times)
    for n in range(TAGS):
        kind = n % 5
        tag = (f"v{n // 1000}.{n % 1000}.0" if kind < 3 else
               f"git-sha-{n:07x}" if kind == 3 else f"feature-{n}")
        svc.tags.set(REPO, tag, digest(n + 1), bind=kind < 4)
    svc.tags.mark_complete(REPO)
    for env in ("develop", "staging", "production"):
        current = None
        for i in range(PROMOTIONS):
            d = digest(rng.randrange(1, TAGS + 1))
            record = {"id": f"prm_bench_{env}_{i}", "kind": "promotion", "repository": REPO,
                      "environment": env, "digest": d, "tags": [],
                      "created_at": "2026-11-01T00:00:00Z"}
            svc.promotions.commit(record, current, int(now * 1000) + i, None)
            current = d


def run(stack: BenchStack, cfg: Config) -> Row:
    from service.core import retention
    from service.domain.policy_model import Policy, Retention
    from service.domain.retention import select

    svc = services(stack)
    now = time.time()
    seed(svc, now)
    rules = Retention(keep_per_environment=5, keep_releases=20, keep_newer_than=14 * 86400,
                      delete_untagged=True)
    policy = Policy(name="bench", repositories=("bench/*",), retention=rules)
    retention.plan(svc, REPO, policy, now)  # warm up (imports, compiled tag matchers)
    full, pure, counts = [], [], []
    for _ in range(cfg.rounds):
        t0 = time.perf_counter()
        snap, selection, _ = retention.plan(svc, REPO, policy, now)
        full.append(len(snap.present) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        select(snap, rules, now)
        pure.append(len(snap.present) / (time.perf_counter() - t0))
        counts.append((len(snap.present), len(selection.kept), len(selection.deleted)))
    present, kept, deleted = counts[-1]
    s_full, s_pure = summary(full), summary(pure)
    row = Row("retention", "retention selection, repository with 10,000 tags (+2,000 untagged "
              "digests)", "—", "digests/s", "— (reported)", gateway=s_full,
              headline=f"{s_full['median']:,.0f} digests/s (Redis snapshot + selection); "
                       f"selection alone {s_pure['median']:,.0f} digests/s",
              headline_value=s_full["median"])
    row.notes.append(f"{present:,} digests evaluated per round: {kept:,} kept, {deleted:,} "
                     "would be deleted; registry not called (references pre-seeded), nothing "
                     "deleted")
    row.detail = {"plan_digests_per_s": full, "select_digests_per_s": pure,
                  "select": s_pure, "present": present, "kept": kept, "deleted": deleted}
    return row
