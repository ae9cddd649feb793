"""The clients and stores one process uses; built once, shared by the API and the workers."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from rq import Queue

from service import store
from service.config import Settings
from service.registry.client import RegistryClient
from service.registry.limits import MemoryBudget
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

    @classmethod
    def build(cls, settings: Settings) -> Services:
        """Connect everything (lazily: no network I/O happens here)."""
        client = store.connect(settings.redis_url)
        rq_client = store.connect(settings.redis_url, decode=False, timeout=10.0)
        return cls(
            settings=settings,
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
            events=EventStore(client),
            environments=EnvironmentStore(client),
            promotions=PromotionStore(client),
            inbox=Inbox(client),
            subscriptions=SubscriptionStore(client),
            tokens=TokenStore(client),
            audit=AuditStore(client),
            scans=ScanStore(client),
            vulndb=VulnDB(client),
            manifest_budget=MemoryBudget(settings.manifest_memory),
            uploads=UploadSessions(client),
            referrers=ReferrerIndex(client),
            approvals=ApprovalStore(client),
            verifications=VerificationStore(client),
            retention=RetentionStore(client),
        )
