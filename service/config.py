"""Settings from TAGWARDEN_* environment variables, validated once at start.

Each variable is read by `environs` (marshmallow fields underneath: the few kinds of value
it does not know, such as URLs of given schemes or `host:port` lists, are fields here); every
bad one is named in one ConfigError, and no message repeats a secret's value.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from environs import Env, EnvValidationError
from marshmallow import ValidationError
from marshmallow import fields as ma_fields
from marshmallow import validate as ma_validate


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


class Url(ma_fields.String):
    """A URL of one of `schemes` with a host (trailing `/` dropped); `optional`: "" is unset."""

    def __init__(self, *, schemes: tuple[str, ...], optional: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.schemes, self.optional = schemes, optional

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if self.optional and not text:
            return ""
        parts = urlsplit(text)
        if parts.scheme not in self.schemes or not parts.netloc:
            raise ValidationError(f"{text!r} is not a {'/'.join(self.schemes)} URL")
        return text.rstrip("/")


class Flag(ma_fields.Boolean):
    """1/true/yes/on or 0/false/no/off (any case, spaces ignored); empty is false."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(truthy={"1", "true", "yes", "on"},
                         falsy={"0", "false", "no", "off", ""}, **kwargs)
        self.error_messages["invalid"] = "{input!r} is not a boolean (true/false)"

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> bool:
        normalised = value.strip().lower() if isinstance(value, str) else value
        try:
            return bool(super()._deserialize(normalised, attr, data, **kwargs))
        except ValidationError:
            raise self.make_error("invalid", input=value) from None


class Rate(ma_fields.String):
    """A rate like `1200/minute` (the `limits` library's notation), or `off`."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if text.strip().lower() in ("off", "0", "none", ""):
            return "off"
        from limits import parse

        try:
            parse(text)
        except ValueError:
            raise ValidationError(f"{text!r} is not a rate such as 1200/minute") from None
        return text


def _host_chars(text: str) -> bool:
    return all(c.isalnum() or c in ".-:_" for c in text)


class Allowlist(ma_fields.Field[tuple[str, ...]]):
    """Comma-separated host names, addresses or CIDRs, each checked so a typo is caught."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> tuple[str, ...]:
        text = str(value)  # environment values are strings
        items = tuple(item.strip().lower() for item in text.split(",") if item.strip())
        for item in items:
            if "/" in item:
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValidationError(f"{item!r} is not a valid CIDR") from None
            elif not _host_chars(item):
                raise ValidationError(f"{item!r} is not a host name, address or CIDR")
        return items


class HostPorts(ma_fields.Field[tuple[tuple[str, int], ...]]):
    """`host:port,host:port,...` (blank: none; each port 1..65535)."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None,
                     **kwargs: Any) -> tuple[tuple[str, int], ...]:
        text = str(value)
        if not text.strip():
            return ()
        out = []
        for item in (part.strip() for part in text.split(",")):
            host, _, port = item.rpartition(":")
            host = host.strip("[]")
            if not host or not port.isdigit() or not 0 < int(port) < 65536 \
                    or not _host_chars(host):
                raise ValidationError(f"{item!r} is not host:port")
            out.append((host, int(port)))
        return tuple(out)


def _secret(value: str) -> None:
    """Empty (off) or 16 characters at least; the message never holds the value."""
    if value and len(value) < 16:
        raise ValidationError("must be at least 16 characters")


def _existing(value: str) -> None:
    if value and not Path(value).exists():
        raise ValidationError(f"{value!r} does not exist")


def _absolute(value: str) -> None:
    if value and not os.path.isabs(value):
        raise ValidationError(f"{value!r} must be an absolute path")


def _queue_name(value: str) -> None:
    if not value.replace("-", "").replace("_", "").isalnum():
        raise ValidationError(f"{value!r} must be letters, digits, - or _")


def _accel_path(value: str) -> None:
    if value and (not re.fullmatch(r"/[A-Za-z0-9_/-]*/", value) or "//" in value):
        raise ValidationError(f"{value!r} must be a path such as /_tagwarden/blobs/ "
                              "(letters, digits, - _ /, ending in /)")


def _within(low: float, high: float) -> ma_validate.Range:
    return ma_validate.Range(low, high, error="{input} is outside {min}..{max}")


def _one_of(*choices: str) -> ma_validate.OneOf:
    return ma_validate.OneOf(choices, error="{input!r} must be " + ", ".join(choices[:-1])
                             + f" or {choices[-1]}")


class _Env(Env):
    """environs reading a given mapping (os.environ by default), with the fields above."""

    def __init__(self, source: Mapping[str, str]) -> None:
        super().__init__(eager=False)
        self._source = dict(source)
        for name, field_class in (("endpoint", Url), ("flag", Flag), ("rate", Rate),
                                  ("allowlist", Allowlist), ("host_ports", HostPorts)):
            self.add_parser_from_field(name, field_class)

    def _get_value(self, env_key: str, default: Any) -> Any:
        # environs reads os.environ here; from_env(env) reads the mapping it was given
        return self._source.get(env_key, default)


HTTP = ("http", "https")
MIB = 1024 * 1024


def _connections(env: _Env, d: Settings) -> dict[str, Any]:
    """The registry, Redis and Sentinel, the public URL, tokens and the queue."""
    return {
        "registry_url": env.endpoint("TAGWARDEN_REGISTRY_URL", d.registry_url, schemes=HTTP),
        "redis_url": env.endpoint("TAGWARDEN_REDIS_URL", d.redis_url,
                             schemes=("redis", "rediss", "unix")),
        "public_url": env.endpoint("TAGWARDEN_PUBLIC_URL", d.public_url, schemes=HTTP,
                              optional=True),
        "admin_token": env.str("TAGWARDEN_ADMIN_TOKEN", d.admin_token, validate=_secret),
        "webhook_token": env.str("TAGWARDEN_WEBHOOK_TOKEN", d.webhook_token,
                                 validate=_secret),
        "registry_timeout": env.int("TAGWARDEN_REGISTRY_TIMEOUT", d.registry_timeout,
                                    validate=_within(1, 3600)),
        "queue_name": env.str("TAGWARDEN_QUEUE", d.queue_name, validate=_queue_name),
        "redis_sentinels": env.host_ports("TAGWARDEN_REDIS_SENTINELS", d.redis_sentinels),
        "redis_sentinel_master": env.str(
            "TAGWARDEN_REDIS_SENTINEL_MASTER", d.redis_sentinel_master,
            validate=ma_validate.Regexp(r"[A-Za-z0-9._-]{1,64}\Z", error=(
                "{input!r} must be 1-64 letters, digits, . _ or -"))),
        "redis_timeout": env.float("TAGWARDEN_REDIS_TIMEOUT", d.redis_timeout,
                                   validate=_within(0.05, 30.0)),
        "redis_min_replicas": env.int("TAGWARDEN_REDIS_MIN_REPLICAS", d.redis_min_replicas,
                                      validate=_within(0, 16)),
        "auth_stale_ttl": env.int("TAGWARDEN_AUTH_STALE_TTL", d.auth_stale_ttl,
                                  validate=_within(0, 7 * 86400)),
    }


def _files(env: _Env, d: Settings) -> dict[str, Any]:
    """Paths the process reads or writes: policies, the OSV database, backups, storage."""
    return {
        "policy_file": env.str("TAGWARDEN_POLICY_FILE", d.policy_file, validate=_existing),
        "vulndb": env.str("TAGWARDEN_VULNDB", d.vulndb, validate=_existing),
        "vulndb_import_root": env.str("TAGWARDEN_VULNDB_IMPORT_ROOT", d.vulndb_import_root,
                                      validate=_existing),
        "backup_dir": env.str("TAGWARDEN_BACKUP_DIR", d.backup_dir, validate=_absolute),
        "restore_spool_dir": env.str("TAGWARDEN_RESTORE_SPOOL_DIR", d.restore_spool_dir,
                                     validate=_absolute),
        "blob_accel_path": env.str("TAGWARDEN_BLOB_ACCEL_PATH", d.blob_accel_path,
                                   validate=_accel_path),
        # unreadable: a warning at start, and pulls are streamed
        "registry_storage": env.str("TAGWARDEN_REGISTRY_STORAGE", d.registry_storage,
                                    validate=_absolute),
    }


def _limits(env: _Env, d: Settings) -> dict[str, Any]:
    """Sizes, timeouts, intervals and stream lengths."""
    ints = {  # attribute: (variable, low, high)
        "proxy_chunk_size": ("TAGWARDEN_PROXY_CHUNK_SIZE", 64 * 1024, 64 * 1024 * 1024),
        "delivery_backoff": ("TAGWARDEN_DELIVERY_BACKOFF", 1, 3600),
        "delivery_timeout": ("TAGWARDEN_DELIVERY_TIMEOUT", 1, 120),
        "scan_timeout": ("TAGWARDEN_SCAN_TIMEOUT", 10, 24 * 3600),
        "vulndb_upload_max_bytes": ("TAGWARDEN_VULNDB_UPLOAD_MAX_BYTES", 1024, 64 * 1024**3),
        "scan_max_bytes": ("TAGWARDEN_SCAN_MAX_BYTES", 1024, 1024**4),
        "reconcile_interval": ("TAGWARDEN_RECONCILE_INTERVAL", 5, 86400),
        "worker_maintenance_interval": ("TAGWARDEN_WORKER_MAINTENANCE_INTERVAL", 5, 3600),
        "job_monitoring_interval": ("TAGWARDEN_JOB_MONITORING_INTERVAL", 1, 600),
        "events_max_len": ("TAGWARDEN_EVENTS_MAX_LEN", 1000, 10**9),
        "audit_max_len": ("TAGWARDEN_AUDIT_MAX_LEN", 1000, 10**9),
        "deliveries_max_len": ("TAGWARDEN_DELIVERIES_MAX_LEN", 100, 10**9),
        "backup_keep": ("TAGWARDEN_BACKUP_KEEP", 1, 10_000),
        "backup_interval": ("TAGWARDEN_BACKUP_INTERVAL", 60, 30 * 86400),
        "restore_max_bytes": ("TAGWARDEN_RESTORE_MAX_BYTES", 1024, 1024**4),
    }
    values = {attr: env.int(name, getattr(d, attr), validate=_within(low, high))
              for attr, (name, low, high) in ints.items()}
    # a bad value reads as None until seal() raises, hence `or 0`
    values["manifest_memory"] = MIB * (env.int(
        "TAGWARDEN_MANIFEST_MEMORY_MIB", d.manifest_memory // MIB, validate=_within(8, 65536))
        or 0)
    values["manifest_cache"] = MIB * (env.int(
        "TAGWARDEN_MANIFEST_CACHE_MIB", d.manifest_cache // MIB, validate=_within(0, 4096))
        or 0)
    # read by service.http.gunicorn_worker; checked here so a typo stops the start too
    env.int("TAGWARDEN_UPLOAD_MIN_RATE", 0, validate=_within(0, 1024**3))
    env.int("TAGWARDEN_RESERVED_THREADS", 1, validate=_within(1, 1024))
    values["fault_pause_after_registry_write"] = float(env.int(
        "TAGWARDEN_FAULT_PAUSE_AFTER_REGISTRY_WRITE", int(d.fault_pause_after_registry_write),
        validate=_within(0, 600)) or 0)
    return values


def _behaviour(env: _Env, d: Settings) -> dict[str, Any]:
    """Switches, modes, rates, the scanner and the outbound allowlist."""
    flags = {"trust_forwarded": "TAGWARDEN_TRUST_FORWARDED",
             "anonymous_pull": "TAGWARDEN_ANONYMOUS_PULL",
             "automatic_mount": "TAGWARDEN_AUTOMATIC_MOUNT",
             "open_docs": "TAGWARDEN_OPEN_DOCS", "open_metrics": "TAGWARDEN_OPEN_METRICS"}
    values = {attr: env.flag(name, getattr(d, attr)) for attr, name in flags.items()}
    values.update({
        "log_format": env.str("TAGWARDEN_LOG_FORMAT", d.log_format,
                              validate=_one_of("json", "text")),
        "outbound_allowlist": env.allowlist("TAGWARDEN_OUTBOUND_ALLOWLIST",
                                            d.outbound_allowlist),
        "scanner_url": env.endpoint("TAGWARDEN_SCANNER_URL", d.scanner_url, schemes=HTTP,
                               optional=True),
        "scanner_registry_url": env.endpoint("TAGWARDEN_SCANNER_REGISTRY_URL",
                                        d.scanner_registry_url, schemes=HTTP, optional=True),
        "scanner_mode": env.str("TAGWARDEN_SCANNER_MODE", d.scanner_mode,
                                validate=_one_of("builtin", "external", "both")),
        "blob_send": env.str("TAGWARDEN_BLOB_SEND", d.blob_send,
                             validate=_one_of("auto", "sendfile", "copy")),
        "rate_limit": env.rate("TAGWARDEN_RATE_LIMIT", d.rate_limit),
        "auth_failure_limit": env.rate("TAGWARDEN_AUTH_FAILURE_LIMIT", d.auth_failure_limit),
    })
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
    # how a blob read from that storage is sent: `sendfile` (no copy through the process),
    # `copy` (read and written in TAGWARDEN_PROXY_CHUNK_SIZE chunks), `auto`: copy to a peer
    # on this host (loopback), sendfile otherwise (see README, "Pulls answered from the storage")
    blob_send: str = "auto"
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
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from TAGWARDEN_* variables, raising ConfigError naming each bad one."""
        reader = _Env(os.environ if env is None else env)
        defaults = cls()
        values: dict[str, Any] = {}
        for part in (_connections, _files, _limits, _behaviour):
            values.update(part(reader, defaults))
        try:
            reader.seal()
        except EnvValidationError as exc:
            errors = exc.error_messages  # variable -> messages (a list only when eager)
            if not isinstance(errors, Mapping):
                errors = {"settings": errors}
            raise ConfigError("; ".join(f"{name}: {' '.join(str(m) for m in messages)}"
                                        for name, messages in errors.items())) from None
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
