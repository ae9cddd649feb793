"""Settings validation: every bad variable is named in the error."""

from __future__ import annotations

import pytest

from service.config import ConfigError, Settings


def test_defaults_without_environment():
    settings = Settings.from_env({})
    assert settings.registry_url == "http://127.0.0.1:5000"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.proxy_chunk_size == 1024 * 1024


def test_values_are_read_and_normalised(tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text("[]")
    settings = Settings.from_env({
        "TAGWARDEN_REGISTRY_URL": "http://registry:5000/",
        "TAGWARDEN_REDIS_URL": "redis://redis:6379/2",
        "TAGWARDEN_ADMIN_TOKEN": "x" * 32,
        "TAGWARDEN_POLICY_FILE": str(policy),
        "TAGWARDEN_LOG_FORMAT": "text",
    })
    assert settings.registry_url == "http://registry:5000"
    assert settings.redis_url == "redis://redis:6379/2"
    assert settings.policy_file == str(policy)
    assert settings.log_format == "text"


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("TAGWARDEN_REGISTRY_URL", "registry:5000", "TAGWARDEN_REGISTRY_URL"),
        ("TAGWARDEN_REGISTRY_URL", "ftp://x", "TAGWARDEN_REGISTRY_URL"),
        ("TAGWARDEN_REDIS_URL", "http://redis", "TAGWARDEN_REDIS_URL"),
        ("TAGWARDEN_ADMIN_TOKEN", "short", "TAGWARDEN_ADMIN_TOKEN"),
        ("TAGWARDEN_WEBHOOK_TOKEN", "short", "TAGWARDEN_WEBHOOK_TOKEN"),
        ("TAGWARDEN_POLICY_FILE", "/nonexistent/policy.yaml", "TAGWARDEN_POLICY_FILE"),
        ("TAGWARDEN_VULNDB", "/nonexistent/osv", "TAGWARDEN_VULNDB"),
        ("TAGWARDEN_REGISTRY_TIMEOUT", "soon", "TAGWARDEN_REGISTRY_TIMEOUT"),
        ("TAGWARDEN_REGISTRY_TIMEOUT", "0", "TAGWARDEN_REGISTRY_TIMEOUT"),
        ("TAGWARDEN_PROXY_CHUNK_SIZE", "10", "TAGWARDEN_PROXY_CHUNK_SIZE"),
        ("TAGWARDEN_LOG_FORMAT", "xml", "TAGWARDEN_LOG_FORMAT"),
        ("TAGWARDEN_QUEUE", "a b", "TAGWARDEN_QUEUE"),
        ("TAGWARDEN_BLOB_ACCEL_PATH", "_tagwarden/blobs/", "TAGWARDEN_BLOB_ACCEL_PATH"),
        ("TAGWARDEN_BLOB_ACCEL_PATH", "/blobs", "TAGWARDEN_BLOB_ACCEL_PATH"),
        ("TAGWARDEN_BLOB_ACCEL_PATH", "/a;b/", "TAGWARDEN_BLOB_ACCEL_PATH"),
        ("TAGWARDEN_BLOB_ACCEL_PATH", "//x/", "TAGWARDEN_BLOB_ACCEL_PATH"),
    ],
)
def test_bad_values_name_the_variable(name, value, needle):
    with pytest.raises(ConfigError, match=needle):
        Settings.from_env({name: value})


def test_secret_values_never_appear_in_errors():
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"TAGWARDEN_ADMIN_TOKEN": "sekrit"})
    assert "sekrit" not in str(info.value)


def test_from_mapping_rejects_unknown_settings():
    with pytest.raises(ConfigError, match="unknown settings: bogus"):
        Settings.from_mapping({"bogus": 1})


def test_blob_accel_path_is_off_by_default_and_read_when_set():
    assert Settings.from_env({}).blob_accel_path == ""
    assert Settings.from_env({"TAGWARDEN_BLOB_ACCEL_PATH": "/_tagwarden/blobs/"}
                             ).blob_accel_path == "/_tagwarden/blobs/"


def test_auth_failure_limit_defaults_and_is_validated():
    assert Settings.from_env({}).auth_failure_limit == "30/minute"
    assert Settings.from_env({"TAGWARDEN_AUTH_FAILURE_LIMIT": "5/hour"}
                             ).auth_failure_limit == "5/hour"
    assert Settings.from_env({"TAGWARDEN_AUTH_FAILURE_LIMIT": "off"}).auth_failure_limit == "off"
    with pytest.raises(ConfigError, match="TAGWARDEN_AUTH_FAILURE_LIMIT"):
        Settings.from_env({"TAGWARDEN_AUTH_FAILURE_LIMIT": "lots"})


def test_high_availability_settings():
    settings = Settings.from_env({
        "TAGWARDEN_REDIS_SENTINELS": "10.0.0.1:26379, sentinel-2:26380,[::1]:26381",
        "TAGWARDEN_REDIS_SENTINEL_MASTER": "tw-prod",
        "TAGWARDEN_REDIS_MIN_REPLICAS": "1",
        "TAGWARDEN_REDIS_TIMEOUT": "0.25",
        "TAGWARDEN_AUTH_STALE_TTL": "600",
        "TAGWARDEN_EVENTS_MAX_LEN": "5000",
        "TAGWARDEN_AUDIT_MAX_LEN": "6000",
        "TAGWARDEN_DELIVERIES_MAX_LEN": "700",
    })
    assert settings.redis_sentinels == (("10.0.0.1", 26379), ("sentinel-2", 26380),
                                        ("::1", 26381))
    assert (settings.redis_sentinel_master, settings.redis_min_replicas) == ("tw-prod", 1)
    assert (settings.redis_timeout, settings.auth_stale_ttl) == (0.25, 600)
    assert (settings.events_max_len, settings.audit_max_len,
            settings.deliveries_max_len) == (5000, 6000, 700)
    defaults = Settings.from_env({})
    assert (defaults.redis_sentinels, defaults.redis_sentinel_master,
            defaults.redis_min_replicas, defaults.auth_stale_ttl) == ((), "tagwarden", 0, 3600)


@pytest.mark.parametrize(("name", "value"), [
    ("TAGWARDEN_REDIS_SENTINELS", "sentinel-1"),
    ("TAGWARDEN_REDIS_SENTINELS", "s1:26379,s2:notaport"),
    ("TAGWARDEN_REDIS_SENTINELS", "s1:70000"),
    ("TAGWARDEN_REDIS_SENTINEL_MASTER", "bad name"),
    ("TAGWARDEN_REDIS_MIN_REPLICAS", "-1"),
    ("TAGWARDEN_REDIS_TIMEOUT", "0"),
    ("TAGWARDEN_REDIS_TIMEOUT", "fast"),
    ("TAGWARDEN_AUTH_STALE_TTL", "forever"),
    ("TAGWARDEN_EVENTS_MAX_LEN", "10"),
    ("TAGWARDEN_AUDIT_MAX_LEN", "x"),
    ("TAGWARDEN_DELIVERIES_MAX_LEN", "1"),
])
def test_bad_high_availability_settings_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_every_setting_is_in_the_readme_tables():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    documented = set(re.findall(r"^\| `(TAGWARDEN_[A-Z_]+)`", readme, re.MULTILINE))
    documented |= set(re.findall(r"^\| `TAGWARDEN_[A-Z_]+` / `(TAGWARDEN_[A-Z_]+)`", readme,
                                 re.MULTILINE))
    source = (Path(__file__).resolve().parents[2] / "service" / "config.py").read_text()
    read = set(re.findall(r'"(TAGWARDEN_[A-Z_]+)"', source)) - {
        "TAGWARDEN_FAULT_PAUSE_AFTER_REGISTRY_WRITE"}  # fault injection, tests only
    assert read - documented == set()
