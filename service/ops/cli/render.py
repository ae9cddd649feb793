"""`tagwarden registry-config`, `nginx-config` and `openapi`: the files a deployment is
started with, rendered from the code."""

from __future__ import annotations

import os
import sys

import click

from service.ops.cli.common import CONTEXT, write_out


@click.command("registry-config", context_settings=CONTEXT,
               short_help="render the registry's config.yml")
@click.option("--data-dir", default="/var/lib/registry", show_default=True)
@click.option("--addr", default="0.0.0.0:5000", show_default=True)
@click.option("--webhook-url", default="http://gateway:8080/api/v1/webhooks/registry",
              show_default=True)
@click.option("--out", default="-", show_default=True)
def registry_config(data_dir: str, addr: str, webhook_url: str, out: str) -> int:
    """Write the registry config (compose runs this once before the registry starts)."""
    from service.ops.registry_config import render_registry_config

    token = os.environ.get("TAGWARDEN_WEBHOOK_TOKEN", "")
    secret = os.environ.get("REGISTRY_HTTP_SECRET", "")
    if not token or not secret:
        print("tagwarden registry-config: set TAGWARDEN_WEBHOOK_TOKEN and REGISTRY_HTTP_SECRET",
              file=sys.stderr)
        return 1
    text = render_registry_config(data_dir=data_dir, addr=addr, secret=secret,
                                  webhook_url=webhook_url, webhook_token=token)
    write_out(out, text)
    return 0


@click.command("nginx-config", context_settings=CONTEXT,
               short_help="render nginx.conf for the front-proxy deployment (blob GETs served "
                          "by nginx after the gateway authorized them)")
@click.option("--listen", default="0.0.0.0:80", show_default=True,
              help="address nginx listens on")
@click.option("--gateway", default="127.0.0.1:8080", show_default=True,
              help="the gateway's host:port")
@click.option("--storage", default="/var/lib/registry", show_default=True,
              help="the registry's filesystem storage root (rootdirectory)")
@click.option("--run-dir", default="/var/lib/tagwarden-nginx", show_default=True,
              help="pid file, error log and temp files")
@click.option("--accel-path", default="/_tagwarden/blobs/", show_default=True,
              help="internal location; the gateway's TAGWARDEN_BLOB_ACCEL_PATH")
@click.option("--out", default="-", show_default=True)
def nginx_config(listen: str, gateway: str, storage: str, run_dir: str, accel_path: str,
                 out: str) -> int:
    """Write the front proxy's nginx.conf (blob GETs served by nginx after the gateway's
    authorization; run the gateway with TAGWARDEN_BLOB_ACCEL_PATH set to --accel-path)."""
    from service.ops.registry_config import render_nginx_config

    try:
        text = render_nginx_config(listen=listen, gateway=gateway, storage=storage,
                                   run_dir=run_dir, accel_path=accel_path)
    except ValueError as exc:
        print(f"tagwarden nginx-config: {exc}", file=sys.stderr)
        return 2
    write_out(out, text)
    return 0


@click.command("openapi", context_settings=CONTEXT,
               short_help="write openapi.yaml from the routes and schemas")
@click.option("--out", default="openapi.yaml", show_default=True,
              help="file to write (- for stdout)")
def openapi(out: str) -> int:
    """Write openapi.yaml, generated from the routes and schemas."""
    from service.http.app import openapi_yaml

    write_out(out, openapi_yaml())
    if out != "-":
        print(f"wrote {out}", file=sys.stderr)
    return 0
