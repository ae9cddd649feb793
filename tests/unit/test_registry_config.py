"""The registry's config.yml: built as a dict and written with yaml.safe_dump (issue 16)."""

from __future__ import annotations

import yaml

from service.ops.registry_config import REGISTRY_HEADER, render_registry_config

WEBHOOK_URL = "http://gateway:8080/api/v1/webhooks/registry"


def test_the_whole_configuration():
    """Every setting the registry gets (what the template used to write, key for key)."""
    text = render_registry_config(data_dir="/var/lib/registry", addr="0.0.0.0:5000",
                                  secret="s3cret-1", webhook_url=WEBHOOK_URL,
                                  webhook_token="tw_token-1")
    assert text.startswith(REGISTRY_HEADER)
    assert yaml.safe_load(text) == {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": "/var/lib/registry"},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": True, "age": "168h",
                                              "interval": "24h", "dryrun": False}},
        },
        "http": {"addr": "0.0.0.0:5000", "secret": "s3cret-1",
                 "headers": {"X-Content-Type-Options": ["nosniff"]}},
        "notifications": {"endpoints": [{
            "name": "tagwarden", "url": WEBHOOK_URL,
            "headers": {"Authorization": ["Bearer tw_token-1"]},
            "timeout": "2s", "threshold": 5, "backoff": "1s",
        }]},
    }
    assert "version: 0.1\n" in text  # a number, as distribution's own examples write it


def test_paths_and_urls_are_quoted_by_the_dumper():
    """Values that would be YAML syntax in a template come back as the same strings."""
    data_dir, url = "/srv/reg: #1 [a]", "http://gw:8080/hook?x=1&y={z}"
    text = render_registry_config(data_dir=data_dir, addr="yes", secret="s", webhook_url=url,
                                  webhook_token="t")
    config = yaml.safe_load(text)
    assert config["storage"]["filesystem"]["rootdirectory"] == data_dir
    assert config["http"]["addr"] == "yes"
    assert config["notifications"]["endpoints"][0]["url"] == url
