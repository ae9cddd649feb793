"""Render the registry configuration from the one template both `make run` and compose use."""

from __future__ import annotations

from importlib import resources
from string import Template


def render_registry_config(
    *, data_dir: str, addr: str, secret: str, webhook_url: str, webhook_token: str
) -> str:
    """The registry's config.yml text, with notifications pointed at the gateway."""
    for name, value in (("secret", secret), ("webhook_token", webhook_token)):
        if not value or any(c in value for c in "\n\r[]{}#,'\""):
            raise ValueError(f"registry {name} must be a non-empty token without YAML syntax")
    text = resources.files("service.registry").joinpath("config.yml.tmpl").read_text()
    return Template(text).substitute(
        data_dir=data_dir,
        addr=addr,
        secret=secret,
        webhook_url=webhook_url,
        webhook_token=webhook_token,
    )
