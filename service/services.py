"""The clients and stores one process uses; built once, shared by the API and the workers."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from rq import Queue

from service import store
from service.config import Settings
from service.core.manifest_cache import ManifestCache
from service.core.pull_events import PullRecorder
from service.registry.client import RegistryClient
from service.registry.limits import MemoryBudget
from service.registry.storage import RegistryStorage
from service.store.approvals import ApprovalStore
from service.store.audit import AuditStore
from service.store.bindings import TagBindings
from service.store.environments import EnvironmentStore
from service.store.events import EventStore
from service.store.inbox import Inbox
from service.store.manifests import ManifestRefs
from service.store.policies import PolicyStore
from service.store.promotions import PromotionStore
from service.store.referrers import ReferrerIndex
from service.store.retention import RetentionStore
from service.store.scans import ScanStore
from service.store.subscriptions import SubscriptionStore
from service.store.tagmap import TagMap
from service.store.tokens import TokenStore
from service.store.uploads import UploadSessions
from service.store.verifications import VerificationStore
from service.store.vulndb import VulnDB


def durable_ms(timeout: float) -> int:
    """How long a write waits for replica acknowledgements (WAIT), in ms: well inside the
    socket timeout of the connection that waits."""
    return max(10, int(timeout * 600))


@dataclass
class Services:
    """Everything a request handler or a job needs, without Flask."""

    settings: Settings
    redis: redis.Redis
    rq_redis: redis.Redis
    queue: Queue
    registry: RegistryClient
    policies: PolicyStore
    tags: TagMap
    bindings: TagBindings
    manifests: ManifestRefs
    events: EventStore
    environments: EnvironmentStore
    promotions: PromotionStore
    inbox: Inbox
    subscriptions: SubscriptionStore
    tokens: TokenStore
    audit: AuditStore
    scans: ScanStore
    vulndb: VulnDB
    manifest_budget: MemoryBudget
    uploads: UploadSessions
    referrers: ReferrerIndex
    approvals: ApprovalStore
    verifications: VerificationStore
    retention: RetentionStore
    manifest_cache: ManifestCache
    pulls: PullRecorder
    storage: RegistryStorage | None = None
    breaker: store.Breaker | None = None

    @classmethod
    def build(cls, settings: Settings, timeout: float | None = None) -> Services:
        """Connect everything (lazily: no network I/O happens here). `timeout`: seconds one
        Redis command may take (default TAGWARDEN_REDIS_TIMEOUT, the request path's)."""
        where = dict(sentinels=settings.redis_sentinels, master=settings.redis_sentinel_master)
        client, breaker = store.guarded(settings.redis_url,
                                        timeout=timeout or settings.redis_timeout, **where)
        rq_client = store.connect(settings.redis_url, decode=False, timeout=10.0, **where)
        events = EventStore(client, settings.events_max_len)
        return cls(
            settings=settings,
            breaker=breaker,
            redis=client,
            rq_redis=rq_client,
            queue=Queue(settings.queue_name, connection=rq_client),
            registry=RegistryClient(
                settings.registry_url,
                timeout=settings.registry_timeout,
                blocksize=settings.proxy_chunk_size,
            ),
            policies=PolicyStore(client),
            tags=TagMap(client),
            bindings=TagBindings(client),
            manifests=ManifestRefs(client),
            events=events,
            environments=EnvironmentStore(client),
            promotions=PromotionStore(client, settings.redis_min_replicas,
                                       durable_ms(timeout or settings.redis_timeout)),
            inbox=Inbox(client, settings.events_max_len),
            subscriptions=SubscriptionStore(client, settings.deliveries_max_len),
            tokens=TokenStore(client, settings.auth_stale_ttl),
            audit=AuditStore(client, settings.audit_max_len),
            scans=ScanStore(client),
            vulndb=VulnDB(client),
            manifest_budget=MemoryBudget(settings.manifest_memory),
            uploads=UploadSessions(client),
            referrers=ReferrerIndex(client),
            approvals=ApprovalStore(client),
            verifications=VerificationStore(client),
            retention=RetentionStore(client),
            manifest_cache=ManifestCache(settings.manifest_cache),
            pulls=PullRecorder(events),
            storage=RegistryStorage.open(settings.registry_storage),
        )
