"""Settings from TAGWARDEN_* environment variables, validated once at start."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _url(name: str, value: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.netloc:
        raise ConfigError(f"{name}={value!r} is not a {'/'.join(schemes)} URL")
    return value.rstrip("/")


def _int(name: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not an integer") from None
    if not low <= number <= high:
        raise ConfigError(f"{name}={number} is outside {low}..{high}")
    return number


def _bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean (true/false)")


def _secret(name: str, value: str) -> str:
    if value and len(value) < 16:
        raise ConfigError(f"{name} must be at least 16 characters")
    return value


def _rate(name: str, value: str) -> str:
    """A rate like `1200/minute` (the `limits` library's notation), or `off`."""
    if value.strip().lower() in ("off", "0", "none", ""):
        return "off"
    from limits import parse

    try:
        parse(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a rate such as 1200/minute") from None
    return value


def _allowlist(name: str, value: str) -> tuple[str, ...]:
    """Host names, addresses or CIDRs; each checked so a typo is caught at start."""
    import ipaddress

    items = tuple(item.strip().lower() for item in value.split(",") if item.strip())
    for item in items:
        if "/" in item:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ConfigError(f"{name}: {item!r} is not a valid CIDR") from None
        elif not all(c.isalnum() or c in ".-:_" for c in item):
            raise ConfigError(f"{name}: {item!r} is not a host name, address or CIDR")
    return items


def _float(name: str, value: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number") from None
    if not low <= number <= high:
        raise ConfigError(f"{name}={number} is outside {low}..{high}")
    return number


def _sentinels(name: str, value: str) -> tuple[tuple[str, int], ...]:
    """`host:port,host:port,...` (at least one; each port 1..65535)."""
    out = []
    for item in (part.strip() for part in value.split(",")):
        host, _, port = item.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536 or not all(
                c.isalnum() or c in ".-:_" for c in host):
            raise ConfigError(f"{name}: {item!r} is not host:port")
        out.append((host, int(port)))
    return tuple(out)


def _path(name: str, value: str, must_exist: bool) -> str:
    if value and must_exist and not Path(value).exists():
        raise ConfigError(f"{name}={value!r} does not exist")
    return value


def _disaster_recovery(get: Any) -> dict[str, Any]:
    """TAGWARDEN_BACKUP_* and TAGWARDEN_RESTORE_* (issue 21)."""
    values: dict[str, Any] = {}
    for name, attr in (("TAGWARDEN_BACKUP_DIR", "backup_dir"),
                       ("TAGWARDEN_RESTORE_SPOOL_DIR", "restore_spool_dir")):
        if (v := get(name)) is not None and v:
            if not os.path.isabs(v):
                raise ConfigError(f"{name}={v!r} must be an absolute path")
            values[attr] = v
    for name, attr, low, high in (
        ("TAGWARDEN_BACKUP_KEEP", "backup_keep", 1, 10_000),
        ("TAGWARDEN_BACKUP_INTERVAL", "backup_interval", 60, 30 * 86400),
        ("TAGWARDEN_RESTORE_MAX_BYTES", "restore_max_bytes", 1024, 1024**4),
    ):
        if (v := get(name)) is not None:
            values[attr] = _int(name, v, low, high)
    return values


@dataclass(frozen=True)
class Settings:
    """Validated configuration; one instance per process."""

    registry_url: str = "http://127.0.0.1:5000"
    redis_url: str = "redis://127.0.0.1:6379/0"
    admin_token: str = ""
    webhook_token: str = ""
    policy_file: str = ""
    vulndb: str = ""
    public_url: str = ""
    registry_timeout: int = 30
    proxy_chunk_size: int = 1024 * 1024
    queue_name: str = "tagwarden"
    log_format: str = "json"
    environments: tuple[str, ...] = field(default=("develop", "staging", "production"))
    outbound_allowlist: tuple[str, ...] = ()
    delivery_backoff: int = 10
    delivery_timeout: int = 5
    webhook_max_bytes: int = 1024 * 1024
    api_max_bytes: int = 2 * 1024 * 1024
    # bytes of manifests one gateway process reads and parses at once (issue 14)
    manifest_memory: int = 64 * 1024 * 1024
    # an OSV export uploaded to POST /api/v1/vulndb/imports (the only larger /api/v1 body)
    vulndb_upload_max_bytes: int = 512 * 1024 * 1024
    # the directory under which POST /api/v1/vulndb/imports may name server-side paths
    vulndb_import_root: str = ""
    anonymous_pull: bool = False
    # a blob mount without `from` looks for a source the caller may read (OCI's automatic
    # content discovery); off, it is an ordinary upload session, as in distribution 2.8
    automatic_mount: bool = False
    rate_limit: str = "1200/minute"
    # failed authentications one client address may make before it is refused for the window
    auth_failure_limit: str = "30/minute"
    open_docs: bool = True
    open_metrics: bool = True
    scan_timeout: int = 1800
    scan_max_bytes: int = 8 * 1024**3
    scanner_url: str = ""
    scanner_mode: str = "builtin"
    scanner_registry_url: str = ""
    trust_forwarded: bool = False
    # front-proxy deployment: answer blob GETs with X-Accel-Redirect to this internal location
    blob_accel_path: str = ""
    # the registry's filesystem `rootdirectory`, readable by the gateway: blob GETs sent from
    # it with sendfile, manifest GET/HEADs answered from the cache after its link files
    registry_storage: str = ""
    # bytes of manifests each gateway process keeps (content-addressed, LRU)
    manifest_cache: int = 16 * 1024 * 1024
    reconcile_interval: int = 60
    worker_maintenance_interval: int = 60
    job_monitoring_interval: int = 10
    # Redis through Sentinel (empty: TAGWARDEN_REDIS_URL names the server)
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = "tagwarden"
    # replicas that must acknowledge a durable write (WAIT) before it is answered
    redis_min_replicas: int = 0
    # seconds one Redis command of a request may take (then: 503 for writes, stale reads)
    redis_timeout: float = 0.5
    # seconds a token verified from Redis stays usable while Redis is unreachable
    auth_stale_ttl: int = 3600
    # retention of what grows without bound (approximate stream lengths)
    events_max_len: int = 1_000_000
    audit_max_len: int = 5_000_000
    deliveries_max_len: int = 100_000
    # fault injection for tests only: seconds a promotion sleeps between registry and Redis
    fault_pause_after_registry_write: float = 0.0
    # disaster recovery (issue 21): scheduled backups into a directory, and restore limits
    backup_dir: str = ""
    backup_keep: int = 7
    backup_interval: int = 86400
    restore_max_bytes: int = 16 * 1024**3
    restore_spool_dir: str = ""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Build settings from TAGWARDEN_* variables, raising ConfigError on a bad one."""
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        get = env.get
        if (v := get("TAGWARDEN_REGISTRY_URL")) is not None:
            values["registry_url"] = _url("TAGWARDEN_REGISTRY_URL", v, ("http", "https"))
        if (v := get("TAGWARDEN_REDIS_URL")) is not None:
            values["redis_url"] = _url(
                "TAGWARDEN_REDIS_URL", v, ("redis", "rediss", "unix")
            )
        if (v := get("TAGWARDEN_PUBLIC_URL")) is not None and v:
            values["public_url"] = _url("TAGWARDEN_PUBLIC_URL", v, ("http", "https"))
        for key in ("admin_token", "webhook_token"):
            name = f"TAGWARDEN_{key.upper()}"
            if (v := get(name)) is not None:
                values[key] = _secret(name, v)
        if (v := get("TAGWARDEN_POLICY_FILE")) is not None:
            values["policy_file"] = _path("TAGWARDEN_POLICY_FILE", v, must_exist=True)
        if (v := get("TAGWARDEN_VULNDB")) is not None:
            values["vulndb"] = _path("TAGWARDEN_VULNDB", v, must_exist=True)
        if (v := get("TAGWARDEN_REGISTRY_TIMEOUT")) is not None:
            values["registry_timeout"] = _int("TAGWARDEN_REGISTRY_TIMEOUT", v, 1, 3600)
        if (v := get("TAGWARDEN_PROXY_CHUNK_SIZE")) is not None:
            values["proxy_chunk_size"] = _int(
                "TAGWARDEN_PROXY_CHUNK_SIZE", v, 64 * 1024, 64 * 1024 * 1024
            )
        if (v := get("TAGWARDEN_MANIFEST_MEMORY_MIB")) is not None:
            values["manifest_memory"] = _int("TAGWARDEN_MANIFEST_MEMORY_MIB", v, 8, 65536) \
                * 1024 * 1024
        for name, low, high in (("TAGWARDEN_UPLOAD_MIN_RATE", 0, 1024**3),
                                ("TAGWARDEN_RESERVED_THREADS", 1, 1024)):
            if (v := get(name)) is not None:  # read by service.http.gunicorn_worker
                _int(name, v, low, high)
        if (v := get("TAGWARDEN_QUEUE")) is not None:
            if not v.replace("-", "").replace("_", "").isalnum():
                raise ConfigError(f"TAGWARDEN_QUEUE={v!r} must be letters, digits, - or _")
            values["queue_name"] = v
        if (v := get("TAGWARDEN_LOG_FORMAT")) is not None:
            if v not in ("json", "text"):
                raise ConfigError(f"TAGWARDEN_LOG_FORMAT={v!r} must be json or text")
            values["log_format"] = v
        if (v := get("TAGWARDEN_OUTBOUND_ALLOWLIST")) is not None:
            values["outbound_allowlist"] = _allowlist("TAGWARDEN_OUTBOUND_ALLOWLIST", v)
        if (v := get("TAGWARDEN_DELIVERY_BACKOFF")) is not None:
            values["delivery_backoff"] = _int("TAGWARDEN_DELIVERY_BACKOFF", v, 1, 3600)
        if (v := get("TAGWARDEN_DELIVERY_TIMEOUT")) is not None:
            values["delivery_timeout"] = _int("TAGWARDEN_DELIVERY_TIMEOUT", v, 1, 120)
        if (v := get("TAGWARDEN_SCAN_TIMEOUT")) is not None:
            values["scan_timeout"] = _int("TAGWARDEN_SCAN_TIMEOUT", v, 10, 24 * 3600)
        if (v := get("TAGWARDEN_VULNDB_IMPORT_ROOT")) is not None and v:
            values["vulndb_import_root"] = _path("TAGWARDEN_VULNDB_IMPORT_ROOT", v,
                                                 must_exist=True)
        if (v := get("TAGWARDEN_VULNDB_UPLOAD_MAX_BYTES")) is not None:
            values["vulndb_upload_max_bytes"] = _int("TAGWARDEN_VULNDB_UPLOAD_MAX_BYTES", v,
                                                     1024, 64 * 1024**3)
        if (v := get("TAGWARDEN_SCAN_MAX_BYTES")) is not None:
            values["scan_max_bytes"] = _int("TAGWARDEN_SCAN_MAX_BYTES", v, 1024, 1024**4)
        if (v := get("TAGWARDEN_SCANNER_URL")) is not None and v:
            values["scanner_url"] = _url("TAGWARDEN_SCANNER_URL", v, ("http", "https"))
        if (v := get("TAGWARDEN_SCANNER_REGISTRY_URL")) is not None and v:
            values["scanner_registry_url"] = _url("TAGWARDEN_SCANNER_REGISTRY_URL", v,
                                                  ("http", "https"))
        if (v := get("TAGWARDEN_SCANNER_MODE")) is not None:
            if v not in ("builtin", "external", "both"):
                raise ConfigError(f"TAGWARDEN_SCANNER_MODE={v!r} must be builtin, external or both")
            values["scanner_mode"] = v
        for name, attr, low, high in (
            ("TAGWARDEN_RECONCILE_INTERVAL", "reconcile_interval", 5, 86400),
            ("TAGWARDEN_WORKER_MAINTENANCE_INTERVAL", "worker_maintenance_interval", 5, 3600),
            ("TAGWARDEN_JOB_MONITORING_INTERVAL", "job_monitoring_interval", 1, 600),
        ):
            if (v := get(name)) is not None:
                values[attr] = _int(name, v, low, high)
        if (v := get("TAGWARDEN_REDIS_SENTINELS")) is not None and v.strip():
            values["redis_sentinels"] = _sentinels("TAGWARDEN_REDIS_SENTINELS", v)
        if (v := get("TAGWARDEN_REDIS_SENTINEL_MASTER")) is not None:
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", v):
                raise ConfigError(f"TAGWARDEN_REDIS_SENTINEL_MASTER={v!r} must be 1-64 letters, "
                                  "digits, . _ or -")
            values["redis_sentinel_master"] = v
        if (v := get("TAGWARDEN_REDIS_TIMEOUT")) is not None:
            values["redis_timeout"] = _float("TAGWARDEN_REDIS_TIMEOUT", v, 0.05, 30.0)
        for name, attr, low, high in (
            ("TAGWARDEN_REDIS_MIN_REPLICAS", "redis_min_replicas", 0, 16),
            ("TAGWARDEN_AUTH_STALE_TTL", "auth_stale_ttl", 0, 7 * 86400),
            ("TAGWARDEN_EVENTS_MAX_LEN", "events_max_len", 1000, 10**9),
            ("TAGWARDEN_AUDIT_MAX_LEN", "audit_max_len", 1000, 10**9),
            ("TAGWARDEN_DELIVERIES_MAX_LEN", "deliveries_max_len", 100, 10**9),
        ):
            if (v := get(name)) is not None:
                values[attr] = _int(name, v, low, high)
        if (v := get("TAGWARDEN_FAULT_PAUSE_AFTER_REGISTRY_WRITE")) is not None:
            values["fault_pause_after_registry_write"] = float(
                _int("TAGWARDEN_FAULT_PAUSE_AFTER_REGISTRY_WRITE", v, 0, 600))
        values.update(_disaster_recovery(get))
        if (v := get("TAGWARDEN_TRUST_FORWARDED")) is not None:
            values["trust_forwarded"] = _bool("TAGWARDEN_TRUST_FORWARDED", v)
        if (v := get("TAGWARDEN_BLOB_ACCEL_PATH")) is not None and v:
            if not re.fullmatch(r"/[A-Za-z0-9_/-]*/", v) or "//" in v:
                raise ConfigError(f"TAGWARDEN_BLOB_ACCEL_PATH={v!r} must be a path such as "
                                  "/_tagwarden/blobs/ (letters, digits, - _ /, ending in /)")
            values["blob_accel_path"] = v
        if (v := get("TAGWARDEN_REGISTRY_STORAGE")) is not None and v:
            if not v.startswith("/"):
                raise ConfigError(f"TAGWARDEN_REGISTRY_STORAGE={v!r} must be an absolute path")
            values["registry_storage"] = v  # unreadable: a warning, and pulls are streamed
        if (v := get("TAGWARDEN_MANIFEST_CACHE_MIB")) is not None:
            values["manifest_cache"] = _int("TAGWARDEN_MANIFEST_CACHE_MIB", v, 0, 4096) \
                * 1024 * 1024
        if (v := get("TAGWARDEN_ANONYMOUS_PULL")) is not None:
            values["anonymous_pull"] = _bool("TAGWARDEN_ANONYMOUS_PULL", v)
        if (v := get("TAGWARDEN_AUTOMATIC_MOUNT")) is not None:
            values["automatic_mount"] = _bool("TAGWARDEN_AUTOMATIC_MOUNT", v)
        if (v := get("TAGWARDEN_OPEN_DOCS")) is not None:
            values["open_docs"] = _bool("TAGWARDEN_OPEN_DOCS", v)
        if (v := get("TAGWARDEN_OPEN_METRICS")) is not None:
            values["open_metrics"] = _bool("TAGWARDEN_OPEN_METRICS", v)
        if (v := get("TAGWARDEN_RATE_LIMIT")) is not None:
            values["rate_limit"] = _rate("TAGWARDEN_RATE_LIMIT", v)
        if (v := get("TAGWARDEN_AUTH_FAILURE_LIMIT")) is not None:
            values["auth_failure_limit"] = _rate("TAGWARDEN_AUTH_FAILURE_LIMIT", v)
        return cls(**values)

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any]) -> Settings:
        """Build settings from a dict of field names (tests) layered over the environment."""
        base = cls.from_env()
        known = {f.name for f in fields(cls)}
        unknown = set(mapping) - known
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        merged = {f.name: getattr(base, f.name) for f in fields(cls)}
        merged.update(mapping)
        return cls(**merged)
