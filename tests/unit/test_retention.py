"""Retention (issue 19 item 1): the selection table, the policy section, and a property test
over random push / promote / rollback histories on fakeredis and a fake registry."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.core import retention
from service.domain.errors import InvalidRequest
from service.domain.policy_model import Policy, Retention
from service.domain.retention import RepositorySnapshot, age_text, parents_first, select
from service.domain.schemas.policy import dump_policy, load_policy
from service.registry.client import Manifest, sha256_digest
from service.store.approvals import ApprovalStore
from service.store.bindings import TagBindings
from service.store.events import EventStore
from service.store.manifests import ManifestRefs
from service.store.referrers import ReferrerIndex
from service.store.retention import RetentionStore
from service.store.scans import ScanStore
from service.store.subscriptions import SubscriptionStore
from service.store.tagmap import TagMap

REPO = "team/app"
ENVS = ("develop", "staging", "production")
DAY = 86400.0
NOW = 100 * DAY


def d(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def snap(**kwargs: Any) -> RepositorySnapshot:
    kwargs.setdefault("present", set())
    return RepositorySnapshot(repository=REPO, environments=ENVS, **kwargs)


# -- the selection, rule by rule ------------------------------------------------------------
def test_every_reason_a_digest_is_kept_is_listed() -> None:
    s = snap(present={d(1), d(2), d(3), d(4)},
             tags={d(1): ["production", "v1.4.2"], d(2): ["v1.4.1"], d(3): ["pr-7"]},
             pointers={"production": d(1), "staging": d(1)},
             history={"staging": [d(1), d(2)], "production": [d(1), d(2)]},
             pushed={d(1): NOW - 2 * DAY, d(2): NOW - 30 * DAY, d(3): NOW - 30 * DAY,
                     d(4): NOW - 30 * DAY},
             busy={d(2): ["scan s1 in progress"]})
    out = select(s, Retention(keep_per_environment=5, keep_releases=20), NOW)
    assert out.kept == {
        d(1): ["staging points here", "production points here",
               "release v1.4.2 among the newest 20", "pushed 2 days ago"],
        d(2): ["rollback target #1 of staging", "rollback target #1 of production",
               "release v1.4.1 among the newest 20", "scan s1 in progress"],
    }
    assert out.deleted == [d(3), d(4)]


def test_rollback_targets_are_numbered_as_rollbacks_reach_them() -> None:
    # newest first: current d1, then d2, d1 again (not counted twice), d3, d4
    s = snap(present={d(n) for n in range(1, 6)}, pointers={"staging": d(1)},
             history={"staging": [d(1), d(2), d(3), d(4), d(5)]},
             pushed={d(n): 0.0 for n in range(1, 6)})
    out = select(s, Retention(keep_per_environment=2, keep_releases=0, keep_newer_than=0), NOW)
    assert out.kept == {d(1): ["staging points here"], d(2): ["rollback target #1 of staging"],
                        d(3): ["rollback target #2 of staging"]}
    assert out.deleted == [d(4), d(5)]


def test_newest_releases_by_push_time_then_version() -> None:
    s = snap(present={d(1), d(2), d(3), d(4)},
             tags={d(1): ["v2.0.0"], d(2): ["v1.9.0", "v1.10.0"], d(3): ["git-sha-abcdef1"],
                   d(4): ["latest"]},
             pushed={d(1): 10.0, d(2): 20.0, d(3): 20.0, d(4): 30.0})
    out = select(s, Retention(keep_releases=2, keep_newer_than=0), NOW)
    # d2 and d3 pushed at the same time: the semver one ranks above the git-sha one
    assert out.kept == {d(2): ["release v1.10.0 among the newest 2"],
                        d(3): ["release git-sha-abcdef1 among the newest 2"]}
    assert out.deleted == [d(1), d(4)]  # `latest` alone keeps nothing


def test_children_of_a_kept_index_stay_and_go_with_a_deleted_one() -> None:
    s = snap(present={d(1), d(2), d(3), d(4), d(5), d(6)},
             tags={d(1): ["v1.0.0"], d(4): ["old"]},
             children={d(1): [d(2), d(3)], d(4): [d(5), d(3)]},
             pushed={d(n): 0.0 for n in range(1, 7)})
    out = select(s, Retention(keep_releases=1, keep_newer_than=0, delete_untagged=False), NOW)
    assert out.kept == {d(1): ["release v1.0.0 among the newest 1"],
                        d(2): [f"in kept index {d(1)}"], d(3): [f"in kept index {d(1)}"],
                        d(6): ["untagged, and delete_untagged is off"]}
    assert out.deleted == [d(4), d(5)]  # the index before its child


def test_referrers_of_a_kept_digest_stay_and_the_others_go() -> None:
    s = snap(present={d(1), d(2), d(3), d(4), d(5)}, tags={d(1): ["v1.0.0"], d(4): ["old"]},
             subjects={d(2): d(1), d(3): d(2), d(5): d(4), d(9): d(1)},  # d9: not present
             pushed={d(n): 0.0 for n in range(1, 6)})
    out = select(s, Retention(keep_releases=1, keep_newer_than=0), NOW)
    assert out.kept == {d(1): ["release v1.0.0 among the newest 1"],
                        d(2): [f"referrer of kept {d(1)}"],
                        d(3): [f"referrer of kept {d(2)}"]}  # a signature of the SBOM
    assert out.deleted == [d(4), d(5)]


def test_an_environment_tag_the_pointer_disagrees_with_keeps_its_digest() -> None:
    s = snap(present={d(1), d(2)}, pointers={"develop": d(1)}, env_tags={"develop": d(2)},
             pushed={d(1): 0.0, d(2): 0.0})
    out = select(s, Retention(keep_newer_than=0), NOW)
    assert out.kept == {d(1): ["develop points here"], d(2): ["environment tag 'develop'"]}


def test_a_digest_without_push_time_stays() -> None:
    out = select(snap(present={d(1)}), Retention(), NOW)
    assert out.kept == {d(1): ["push time unknown"]}


def test_parents_first_orders_nested_indexes() -> None:
    children = {d(1): [d(2)], d(2): [d(3)], d(9): [d(3)]}
    assert parents_first({d(1), d(2), d(3), d(9)}, children) == [d(1), d(2), d(9), d(3)]


@pytest.mark.parametrize(("seconds", "text"), [(0, "0 seconds"), (1, "1 second"),
                                               (59, "59 seconds"), (60, "1 minute"),
                                               (7200, "2 hours"), (86400, "1 day"),
                                               (2 * 86400 + 5, "2 days")])
def test_age_text(seconds: int, text: str) -> None:
    assert age_text(seconds) == text


# -- the policy section ---------------------------------------------------------------------
BASE = {"name": "team", "repositories": ["team/*"]}


def test_retention_section_loads_and_dumps() -> None:
    section = {"keep_per_environment": 3, "keep_releases": 10, "keep_newer_than": "14d",
               "delete_untagged": False, "schedule": "0 3 * * *"}
    policy = load_policy({**BASE, "retention": section})
    assert policy.retention == Retention(3, 10, 14 * 86400, False, "0 3 * * *")
    assert dump_policy(policy)["retention"] == section
    assert load_policy({**BASE, "retention": {}}).retention == Retention()
    assert "retention" not in dump_policy(load_policy(BASE))


@pytest.mark.parametrize(("section", "field_"), [
    ({"schedule": "0 3 * *"}, "retention.schedule"),
    ({"schedule": "0 25 * * *"}, "retention.schedule"),
    ({"keep_releases": -1}, "retention.keep_releases"),
    ({"keep_releases": "20"}, "retention.keep_releases"),
    ({"keep_newer_than": "two weeks"}, "retention.keep_newer_than"),
    ({"delete_untagged": "yes"}, "retention.delete_untagged"),
    ({"keep_forever": True}, "retention.keep_forever"),
])
def test_a_bad_retention_section_names_the_field(section: dict, field_: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        load_policy({**BASE, "retention": section})
    assert list(exc.value.errors) == [field_]


# -- the property: random histories ---------------------------------------------------------
class FakeRegistry:
    """One repository: manifests by digest and tags, as distribution keeps them."""

    def __init__(self) -> None:
        self.manifests: dict[str, Manifest] = {}
        self.tags: dict[str, str] = {}

    def put(self, body: bytes, media_type: str, tag: str | None = None) -> str:
        digest = sha256_digest(body)
        self.manifests[digest] = Manifest(body, media_type, digest)
        if tag:
            self.tags[tag] = digest
        return digest

    def get_manifest(self, repository: str, reference: str) -> Manifest | None:
        return self.manifests.get(self.tags.get(reference, reference))

    def head_manifest(self, repository: str, reference: str) -> str | None:
        found = self.get_manifest(repository, reference)
        return found.digest if found else None

    def delete_manifest(self, repository: str, digest: str) -> bool:
        if self.manifests.pop(digest, None) is None:
            return False
        self.tags = {t: x for t, x in self.tags.items() if x != digest}
        return True

    def list_tags(self, repository: str) -> list[str]:
        return list(self.tags)


@dataclass
class Model:
    """The history as the test sees it (the oracle), and the services retention reads."""

    svc: Any
    registry: FakeRegistry
    clock: float = 0.0
    counter: int = 0
    pushed: dict[str, float] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)
    history: dict[str, list[str]] = field(default_factory=dict)  # env -> digests, oldest first
    pointers: dict[str, str] = field(default_factory=dict)
    scanning: dict[str, str] = field(default_factory=dict)  # digest -> its active scan
    subjects: dict[str, str] = field(default_factory=dict)  # referrer -> subject

    # the promotion and environment stores retention reads (their Lua lives in real Redis)
    def distinct_digests(self, repository: str, environment: str, count: int) -> list[str]:
        out: list[str] = []
        for digest in reversed(self.history.get(environment, [])):
            if digest not in out:
                out.append(digest)
        return out[:count]

    def intent(self, repository: str, environment: str) -> None:
        return None

    def digests(self, repository: str) -> dict[str, str]:
        return dict(self.pointers)

    def _record(self, digest: str, tag: str | None, immutable: bool) -> None:
        self.pushed.setdefault(digest, self.clock)
        self.svc.retention.mark_pushed(REPO, digest, at=self.clock)
        if tag:
            self.svc.tags.set(REPO, tag, digest, bind=immutable)

    def image(self, tag: str | None, immutable: bool = False) -> str:
        self.counter += 1
        size = 100 + self.counter
        body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest"
                           ".v1+json", "config": {"digest": d(10**6 + self.counter),
                                                  "size": size},
                           "layers": [{"digest": d(2 * 10**6 + self.counter), "size": size}]}
                          ).encode()
        digest = self.registry.put(body, "application/vnd.oci.image.manifest.v1+json", tag)
        self._record(digest, tag, immutable)
        return digest

    def index(self, tag: str | None, immutable: bool) -> str:
        kids = [self.image(None), self.image(None)]
        body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index"
                           ".v1+json", "manifests": [{"digest": k, "size": 1} for k in kids]}
                          ).encode()
        digest = self.registry.put(body, "application/vnd.oci.image.index.v1+json", tag)
        self.children[digest] = kids
        self._record(digest, tag, immutable)
        return digest

    def push(self, kind: str) -> None:
        self.clock += 3600
        n = self.counter
        if kind == "semver":
            self.image(f"v1.{n}.0", immutable=True)
        elif kind == "sha":
            self.image(f"git-sha-{n:07x}", immutable=True)
        elif kind == "other":
            self.image(f"pr-{n % 3}")  # mutable: moves between digests
        elif kind == "latest":
            self.image("latest")
        elif kind == "index":
            self.index(f"v2.{n}.0", immutable=True)
        else:
            self.image(None)

    def refer(self, pick: int) -> None:
        """An SBOM pushed for an existing digest (untagged, with a subject)."""
        candidates = sorted(self.registry.manifests)
        if not candidates:
            return
        subject = candidates[pick % len(candidates)]
        self.clock += 60
        self.counter += 1
        body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest"
                           ".v1+json", "artifactType": "application/spdx+json",
                           "config": {"digest": d(3 * 10**6 + self.counter), "size": 2},
                           "layers": [], "subject": {"digest": subject, "size": 1}}).encode()
        digest = self.registry.put(body, "application/vnd.oci.image.manifest.v1+json")
        self._record(digest, None, False)
        self.svc.referrers.add(REPO, subject, {"digest": digest, "size": len(body)})
        self.subjects[digest] = subject

    def promote(self, env: str, pick: int) -> None:
        candidates = sorted(self.registry.manifests)
        if not candidates:
            return
        self._move(env, candidates[pick % len(candidates)])

    def rollback(self, env: str, strict: bool = False) -> None:
        """To the previous digest, as POST /rollbacks does; one retention deleted is a 404
        there (skipped here) unless `strict`: then the rollback had to work."""
        current = self.pointers.get(env)
        target = next((x for x in reversed(self.history.get(env, [])) if x != current), None)
        if current is None or target is None:
            return
        if target not in self.registry.manifests:
            assert not strict, f"rollback of {env} to {target} failed: deleted"
            return
        self._move(env, target)

    def _move(self, env: str, digest: str) -> None:
        self.clock += 1
        self.history.setdefault(env, []).append(digest)
        self.pointers[env] = digest
        self.registry.tags[env] = digest
        self.svc.tags.set(REPO, env, digest)

    def scan(self, pick: int) -> None:
        candidates = sorted(self.registry.manifests)
        if candidates:
            digest = candidates[pick % len(candidates)]
            self.scanning[digest] = self.svc.scans.claim(digest, f"scan-{pick}") or f"scan-{pick}"

    def scans_finish(self) -> None:
        for digest, scan_id in self.scanning.items():
            self.svc.scans.release(digest, scan_id)
        self.scanning.clear()


def services(registry: FakeRegistry) -> tuple[Any, Model]:
    r = fakeredis.FakeRedis(decode_responses=True)
    svc = SimpleNamespace(redis=r, tags=TagMap(r), bindings=TagBindings(r),
                          manifests=ManifestRefs(r), retention=RetentionStore(r),
                          scans=ScanStore(r), events=EventStore(r),
                          subscriptions=SubscriptionStore(r), referrers=ReferrerIndex(r),
                          approvals=ApprovalStore(r), registry=registry)
    model = Model(svc, registry)
    svc.promotions = svc.environments = model
    svc.tags.mark_complete(REPO)
    return svc, model


PUSH = st.tuples(st.just("push"), st.sampled_from(["semver", "sha", "other", "latest", "index",
                                                  "untagged"]))
OPS = st.one_of(
    PUSH, PUSH, PUSH,
    st.tuples(st.just("promote"), st.sampled_from(ENVS), st.integers(0, 50)),
    st.tuples(st.just("rollback"), st.sampled_from(ENVS)),
    st.tuples(st.just("wait"), st.integers(1, 3 * 86400)),
    st.tuples(st.just("scan"), st.integers(0, 50)),
    st.tuples(st.just("refer"), st.integers(0, 50)),
)
RULES = st.builds(Retention, keep_per_environment=st.integers(0, 3),
                  keep_releases=st.integers(0, 4),
                  keep_newer_than=st.sampled_from([0, 7200, 86400]),
                  delete_untagged=st.booleans())


def play(model: Model, ops: list[tuple]) -> None:
    for op in ops:
        if op[0] == "wait":
            model.clock += op[1]
        else:
            getattr(model, op[0])(*op[1:])


def must_keep(model: Model, rules: Retention) -> dict[str, str]:
    """The oracle: every digest the run had to keep (written from the rules, not the code)."""
    reg = model.registry
    keep: dict[str, str] = {}
    for env, digest in model.pointers.items():
        keep[digest] = f"{env} points here"
    for env in ENVS:
        earlier = [x for x in model.distinct_digests(REPO, env, 10**6)
                   if x != model.pointers.get(env)]
        for n, digest in enumerate(earlier[:rules.keep_per_environment], 1):
            keep[digest] = f"rollback #{n} of {env}"
    bound = {b["digest"]: t for t, b in model.svc.bindings.all(REPO).items()}
    tags_of: dict[str, set[str]] = {}
    for tag, digest in reg.tags.items():
        tags_of.setdefault(digest, set()).add(tag)
    for digest, tag in bound.items():
        tags_of.setdefault(digest, set()).add(tag)
    releases = sorted((x for x in reg.manifests if any(
        t.startswith(("v1.", "v2.", "git-sha-")) for t in tags_of.get(x, ()))),
        key=lambda x: model.pushed[x], reverse=True)
    for digest in releases[:rules.keep_releases]:
        keep[digest] = "release"
    kids = {k for ks in model.children.values() for k in ks}
    for digest in reg.manifests:
        if model.clock - model.pushed[digest] < rules.keep_newer_than:
            keep[digest] = "new"
        if digest in model.scanning:
            keep[digest] = "scan"
        if not rules.delete_untagged and not tags_of.get(digest) and digest not in kids:
            keep[digest] = "untagged"
    grown = True
    while grown:  # children of kept indexes, referrers of kept digests, to a fixpoint
        grown = False
        for digest in list(keep):
            dependents = list(model.children.get(digest, ()))
            dependents += [r for r, subject in model.subjects.items() if subject == digest]
            for dependent in dependents:
                if dependent not in keep:
                    keep[dependent] = "child or referrer"
                    grown = True
    return keep


def run_and_check(model: Model, rules: Retention) -> None:
    svc, reg = model.svc, model.registry
    policy = Policy(name="p", repositories=("team/*",), environments=ENVS, retention=rules)
    before, bindings = set(reg.manifests), svc.bindings.all(REPO)
    keep = {x: why for x, why in must_keep(model, rules).items() if x in before}
    run = {"id": "ret_test", "dry_run": False, "requested_by": "test"}
    report = retention.apply(svc, run, REPO, policy, now=model.clock)  # type: ignore[arg-type]
    deleted = {item["digest"] for item in report["deleted"]}
    kept = {item["digest"] for item in report["kept"]}
    assert not deleted & keep.keys(), {x: keep[x] for x in deleted & keep.keys()}
    assert deleted | kept == before and not deleted & kept
    assert set(reg.manifests) == before - deleted
    for digest in reg.manifests:  # no index is left pointing at a deleted manifest
        assert all(k in reg.manifests for k in model.children.get(digest, ()))
    assert svc.bindings.all(REPO) == bindings  # retention never frees an immutable tag
    for env in ENVS:  # every rollback the history allows still works
        current = model.pointers.get(env)
        earlier = [x for x in model.distinct_digests(REPO, env, 10**6) if x != current]
        for target in ([current] if current else []) + earlier[:rules.keep_per_environment]:
            assert target in reg.manifests
            assert all(k in reg.manifests for k in model.children.get(target, ()))
    assert all(item["reasons"] for item in report["kept"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=st.lists(OPS, min_size=5, max_size=60), second=st.lists(OPS, max_size=30),
       rules=RULES)
def test_a_run_never_deletes_what_it_must_keep(first: list, second: list,
                                              rules: Retention) -> None:
    registry = FakeRegistry()
    _, model = services(registry)
    play(model, first)
    run_and_check(model, rules)
    model.scans_finish()  # more history happens, then a second run
    play(model, second)
    run_and_check(model, rules)
    if rules.keep_per_environment:  # rolling back to the previous digest works everywhere
        for env in ENVS:
            model.rollback(env, strict=True)


# -- the schedule ---------------------------------------------------------------------------
class Queue:
    def __init__(self) -> None:
        self.jobs: list[tuple[str, tuple]] = []

    def enqueue(self, func: str, *args: Any, **kwargs: Any) -> None:
        self.jobs.append((func, args))


def test_a_schedule_starts_one_real_run_per_cron_slot() -> None:
    from datetime import UTC, datetime

    from service.store.policies import PolicyStore

    r = fakeredis.FakeRedis(decode_responses=True)
    svc = SimpleNamespace(policies=PolicyStore(r), retention=RetentionStore(r), queue=Queue())
    svc.policies.put(load_policy({**BASE, "retention": {"schedule": "0 3 * * *"}}))
    svc.policies.put(load_policy({"name": "manual", "repositories": ["m/*"],
                                  "retention": {}}))  # no schedule: on demand only
    at = datetime(2026, 12, 1, 3, 0, 20, tzinfo=UTC)
    started = retention.due(svc, at)  # type: ignore[arg-type]
    assert [(s["policy"], s["dry_run"], s["trigger"]) for s in started] == [
        ("team", False, "schedule")]
    assert svc.queue.jobs == [("workers.retention.run_retention", (started[0]["id"],))]
    assert svc.retention.run(started[0]["id"])["status"] == "queued"
    # another worker's tick in the same slot, and a tick long after it: nothing more
    assert retention.due(svc, datetime(2026, 12, 1, 3, 1, 0, tzinfo=UTC)) == []  # type: ignore[arg-type]
    assert retention.due(svc, datetime(2026, 12, 1, 4, 0, 0, tzinfo=UTC)) == []  # type: ignore[arg-type]
    assert len(retention.due(svc, datetime(2026, 12, 2, 3, 0, 0, tzinfo=UTC))) == 1  # type: ignore[arg-type]


def test_a_digest_with_a_pending_approval_is_busy() -> None:
    """Retention never deletes what someone is approving (the approvals store's expiry)."""
    from datetime import UTC, datetime, timedelta

    from service.core.retention import _busy
    from service.store.approvals import ApprovalStore
    from service.store.promotions import PromotionStore
    from service.store.scans import ScanStore

    r = fakeredis.FakeRedis(decode_responses=True)
    svc = SimpleNamespace(promotions=PromotionStore(r), approvals=ApprovalStore(r),
                          scans=ScanStore(r))
    soon = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    gone = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for n, (digest, expires) in enumerate([(d(1), soon), (d(2), gone)]):
        svc.approvals.add({"id": f"apr_{n}", "repository": "team/app",
                           "environment": "production", "digest": digest, "approver": "alice",
                           "expires_at": expires}, 3600)
    busy = _busy(svc, "team/app", load_policy({"name": "p", "repositories": ["*"]}),
                 {d(1), d(2)})
    assert dict(busy) == {d(1): ["approval pending"]}
