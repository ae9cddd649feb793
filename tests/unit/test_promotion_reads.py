"""The promotion's Redis reads and the worker's scan-on-push decisions, on fakeredis."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest

from service.core import scans
from service.core.promotions import digest_tags
from service.domain.durations import format_time
from service.domain.policy import DEFAULT_POLICY
from service.store import key
from service.store.bindings import TagBindings
from service.store.environments import EnvironmentStore
from service.store.policies import PolicyStore
from service.store.promotions import PromotionStore
from service.store.referrers import ReferrerIndex
from service.store.retention import RetentionStore
from service.store.scans import ScanStore
from service.store.tagmap import TagMap
from service.store.vulndb import VulnDB
from workers import events

REPO = "team/app"
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
ENVS = DEFAULT_POLICY.environments


class Registry:
    """The registry calls digest_tags may make, answered from a dict and counted."""

    def __init__(self, tags: dict[str, str]) -> None:
        self.tags = tags
        self.calls: list[str] = []

    def list_tags(self, repository: str) -> list[str]:
        self.calls.append("list")
        return list(self.tags)

    def head_manifest(self, repository: str, reference: str) -> str | None:
        self.calls.append(f"head {reference}")
        return self.tags.get(reference)

    def get_manifest(self, repository: str, reference: str) -> None:
        self.calls.append(f"get {reference}")  # a push event looks for a referrer's subject


@pytest.fixture
def svc() -> SimpleNamespace:
    r = fakeredis.FakeRedis(decode_responses=True)
    return SimpleNamespace(redis=r, tags=TagMap(r), bindings=TagBindings(r),
                           promotions=PromotionStore(r), scans=ScanStore(r),
                           environments=EnvironmentStore(r),
                           policies=PolicyStore(r), vulndb=VulnDB(r), registry=Registry({}),
                           referrers=ReferrerIndex(r), retention=RetentionStore(r))


def tags_of(svc: SimpleNamespace, digest: str, source_tag: str | None = None) -> list[str]:
    inputs = svc.promotions.gate_inputs(REPO, digest, list(ENVS))
    return digest_tags(svc, REPO, digest, ENVS, inputs, source_tag)  # type: ignore[arg-type]


def test_a_complete_tag_map_answers_without_the_registry(svc: SimpleNamespace) -> None:
    for tag, digest in {"v1.0.0": A, "abc1234": A, "v0.9.0": B, "develop": A}.items():
        svc.tags.set(REPO, tag, digest)
    svc.tags.mark_complete(REPO)
    assert tags_of(svc, A) == ["abc1234", "v1.0.0"]
    assert svc.registry.calls == []


def test_an_incomplete_map_is_compared_with_the_registry_once(svc: SimpleNamespace) -> None:
    svc.registry.tags = {"v1.0.0": A, "v1.1.0": A, "v0.9.0": B, "develop": A}
    svc.tags.set(REPO, "v0.9.0", B)  # known elsewhere: trusted, not asked
    assert tags_of(svc, A) == ["v1.0.0", "v1.1.0"]
    assert sorted(svc.registry.calls) == ["head v1.0.0", "head v1.1.0", "list"]
    assert svc.tags.all(REPO) == {"v1.0.0": A, "v1.1.0": A, "v0.9.0": B}
    svc.registry.calls.clear()
    assert tags_of(svc, A) == ["v1.0.0", "v1.1.0"]
    assert svc.registry.calls == []


def test_the_resolved_source_tag_counts_while_the_map_lags(svc: SimpleNamespace) -> None:
    svc.tags.set(REPO, "v1.0.0", A)
    svc.tags.mark_complete(REPO)
    assert tags_of(svc, A, source_tag="v2.0.0") == ["v1.0.0", "v2.0.0"]
    assert tags_of(svc, A, source_tag="staging") == ["v1.0.0"]


def test_gate_inputs_read_reached_and_the_latest_scan(svc: SimpleNamespace) -> None:
    svc.redis.hset(key("reached", REPO), f"develop|{A}", "2026-11-28T16:00:00Z")
    svc.redis.set(key("scan-latest", A), "scn_1")
    inputs = svc.promotions.gate_inputs(REPO, A, list(ENVS))
    assert (inputs.reached, inputs.scan_id, inputs.tags_complete) == (
        {"develop": "2026-11-28T16:00:00Z"}, "scn_1", False)


def failed_scan(finished: datetime) -> dict[str, Any]:
    scan = scans.new_scan(REPO, A, None, "push")
    scan.update(status="failed", error="no vulnerability database loaded",
                finished_at=format_time(finished))
    return scan


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def request_scan(svc: Any, repository: str, digest: str, actor: Any, reason: str) -> Any:
        calls.append(digest)
        return {"id": "scn_new"}, True

    monkeypatch.setattr(scans, "request_scan", request_scan)
    return calls


def test_a_scan_that_just_failed_is_not_queued_again(svc: SimpleNamespace,
                                                     queued: list[str]) -> None:
    svc.scans.create(failed_scan(datetime.now(UTC) - timedelta(seconds=5)))
    assert scans.scan_on_push(svc, REPO, A) is None  # type: ignore[arg-type]
    assert queued == []


def test_an_old_failure_is_retried(svc: SimpleNamespace, queued: list[str]) -> None:
    svc.scans.create(failed_scan(datetime.now(UTC) - scans.RETRY_FAILED_AFTER
                                 - timedelta(seconds=5)))
    assert scans.scan_on_push(svc, REPO, A) == {"id": "scn_new"}  # type: ignore[arg-type]
    assert queued == [A]


def test_a_failure_before_the_database_was_loaded_is_retried(svc: SimpleNamespace,
                                                             queued: list[str]) -> None:
    svc.scans.create(failed_scan(datetime.now(UTC) - timedelta(seconds=30)))
    svc.redis.set(key("vulndb", "current"), "1")
    svc.redis.hset(key("vulndb", "g1", "meta"),
                   mapping={"records": "1", "loaded_at": format_time(datetime.now(UTC))})
    assert svc.vulndb.info()["loaded_at"] is not None
    assert scans.scan_on_push(svc, REPO, A) == {"id": "scn_new"}  # type: ignore[arg-type]
    assert queued == [A]


@pytest.fixture
def scanned(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(events.governance, "scan_after_push",
                        lambda svc, repository, digest: calls.append(digest))
    return calls


def push_event(tag: str, digest: str) -> dict[str, Any]:
    return {"action": "push", "repository": REPO, "tag": tag, "digest": digest,
            "media_type": "application/vnd.oci.image.manifest.v1+json"}


def test_the_gateways_own_environment_push_queues_no_scan(svc: SimpleNamespace,
                                                          scanned: list[str]) -> None:
    svc.redis.hset(key("env", REPO), "develop", json.dumps({"digest": A}))
    events.on_manifest_push(svc, push_event("develop", A))  # type: ignore[arg-type]
    svc.redis.set(key("intent", REPO, "staging"), json.dumps({"record": {"digest": B}}))
    events.on_manifest_push(svc, push_event("staging", B))  # type: ignore[arg-type]
    assert scanned == []


def test_an_ordinary_push_and_a_foreign_environment_push_are_scanned(
        svc: SimpleNamespace, scanned: list[str]) -> None:
    svc.tags.lock = lambda *_a, **_k: contextlib.nullcontext()  # redis-py's lock needs Lua
    svc.registry.tags = {"v1.0.0": A}  # the registry bears the event out
    events.on_manifest_push(svc, push_event("v1.0.0", A))  # type: ignore[arg-type]
    events.on_manifest_push(svc, push_event("production", B))  # type: ignore[arg-type]
    assert scanned == [A, B]


# -- the immutability check of a push: where does a tag point now? ---------------------------

def test_a_new_repository_is_looked_up_once_then_the_map_answers(svc: SimpleNamespace) -> None:
    from service.core.governance import current_digest

    assert current_digest(svc, REPO, "v1.0.0") is None  # type: ignore[arg-type]
    assert svc.registry.calls == ["head v1.0.0", "list"]  # unknown repository: map complete
    svc.registry.calls.clear()
    svc.tags.set(REPO, "v1.0.0", A)  # what the push records
    assert current_digest(svc, REPO, "v1.1.0") is None  # type: ignore[arg-type]
    assert current_digest(svc, REPO, "v1.0.0") == A  # type: ignore[arg-type]
    assert svc.registry.calls == []


def test_a_repository_with_content_from_before_keeps_the_registry_asked(
        svc: SimpleNamespace) -> None:
    """Tags pushed before the gateway may be missing from the map: it is never vouched for
    by a push (a promotion compares it with the tag list), and the tag list is not fetched
    on every push of a new tag either."""
    from service.core.governance import current_digest

    svc.registry.tags = {"v0.1.0": B, "v0.2.0": B}
    assert current_digest(svc, REPO, "v1.0.0") is None  # type: ignore[arg-type]
    assert svc.registry.calls == ["head v1.0.0", "list"]  # the map knew nothing: asked once
    svc.tags.set(REPO, "v1.0.0", A)  # what the push records
    svc.registry.calls.clear()
    assert current_digest(svc, REPO, "v0.2.0") == B  # type: ignore[arg-type]
    assert current_digest(svc, REPO, "v2.0.0") is None  # type: ignore[arg-type]
    assert current_digest(svc, REPO, "v0.2.0") == B  # type: ignore[arg-type]  # learnt
    assert svc.registry.calls == ["head v0.2.0", "head v2.0.0"]
    assert not svc.redis.exists(key("tags-complete", REPO))
