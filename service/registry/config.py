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


def render_nginx_config(
    *, listen: str, gateway: str, storage: str, run_dir: str, accel_path: str = "/_tagwarden/blobs/"
) -> str:
    """nginx.conf for the front-proxy deployment: blob GETs served from the registry's storage
    after the gateway authorized them (X-Accel-Redirect), everything else proxied."""
    for name, value in (("listen", listen), ("gateway", gateway), ("storage", storage),
                        ("run_dir", run_dir), ("accel_path", accel_path)):
        if not value or any(c in value for c in "\n\r;{}#'\"$ \t"):
            raise ValueError(f"nginx {name} must be non-empty, without spaces or nginx syntax")
    if not (accel_path.startswith("/") and accel_path.endswith("/")):
        raise ValueError("nginx accel_path must start and end with /")
    text = resources.files("service.registry").joinpath("nginx.conf.tmpl").read_text()
    return Template(text).substitute(
        listen=listen, gateway=gateway, storage=storage.rstrip("/"), run_dir=run_dir.rstrip("/"),
        accel_path=accel_path,
    )
