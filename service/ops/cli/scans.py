"""`tagwarden scan` and `tagwarden vulndb import`: scans and the offline vulnerability
database through the API."""

from __future__ import annotations

import functools
import os
import shutil
import sys
from typing import Any

import click

from service.ops.cli.common import (
    CONTEXT,
    POSITIVE_FLOAT,
    Api,
    api_options,
    call,
    client_for,
    exclusive,
    print_json,
)

SCAN_POLL_SECONDS = 1.0


@click.command(
    "scan", context_settings=CONTEXT, short_help="scan a tag or digest (and wait for the verdict)",
    help="Request a scan (POST /api/v1/scans); with --wait, poll it until it has succeeded or "
         "failed.",
    epilog="exit status: 0 queued (or, with --wait, succeeded), 1 failed or any error")
@click.option("--repository", required=True, metavar="REPO")
@click.option("--tag", help="scan the digest this tag points to")
@click.option("--digest", metavar="sha256:...", help="scan this digest")
@click.option("--wait", is_flag=True, help="wait until the scan has finished")
@click.option("--wait-timeout", type=POSITIVE_FLOAT, default=1800.0, metavar="SECONDS",
              help="give up waiting after this long (default: 1800)")
@api_options()
def scan(api: Api, repository: str, tag: str | None, digest: str | None, wait: bool,
         wait_timeout: float) -> int:
    """POST /api/v1/scans, then (--wait) poll the scan until it finished."""
    import time

    exclusive({"tag": tag, "digest": digest}, {"tag": "--tag", "digest": "--digest"},
              required=True)
    client = client_for(api)
    found, failed = call(api, lambda: client.scan(repository, tag or digest))
    if failed is not None:
        return failed
    deadline = time.monotonic() + wait_timeout
    while wait and found.get("status") in ("queued", "running"):
        if time.monotonic() > deadline:
            print(f"error: scan {found.get('id')} still {found.get('status')} after "
                  f"{wait_timeout:g}s", file=sys.stderr)
            return 1
        time.sleep(SCAN_POLL_SECONDS)
        found, failed = call(api, functools.partial(client.get_scan, str(found["id"])))
        if failed is not None:
            return failed
    if api.json:
        print_json(found)
    status = found.get("status")
    line = f"scan {found.get('id')} of {repository} {found.get('digest')}: {status}"
    if status == "succeeded":
        summary = found.get("summary") or {}
        line += " (" + ", ".join(f"{k} {summary.get(k, 0)}" for k in
                                 ("critical", "high", "medium", "low", "unknown")) + ")"
    elif status == "failed":
        line += f": {found.get('error')}"
    print(line, file=sys.stderr if api.json else sys.stdout)
    return 1 if status == "failed" else 0


@click.group("vulndb", context_settings=CONTEXT,
             short_help="manage the offline vulnerability database")
def vulndb() -> None:
    """Manage the offline vulnerability database."""


@vulndb.command(
    "import", context_settings=CONTEXT,
    short_help="load an OSV export (JSON files, all.zip) through the API",
    help="Upload an OSV export to POST /api/v1/vulndb/imports (admin token): a zip is sent as "
         "it is, a directory of .json files and/or all.zip archives is zipped first; with "
         "--server-path, PATH is read on the gateway's host.\n\nPATH: an OSV zip, or a "
         "directory of OSV JSON files and/or all.zip archives.")
@click.argument("path")
@click.option("--server-path", is_flag=True,
              help="PATH is on the gateway's host (nothing is uploaded)")
@click.option("--no-rescan", is_flag=True,
              help="do not queue rescans of the digests environments point to")
@api_options(timeout=600.0)
def vulndb_import(api: Api, path: str, server_path: bool, no_rescan: bool) -> int:
    """Import an OSV export: a zip uploaded, a directory zipped and uploaded, or (with
    --server-path) a path on the gateway's host named."""
    import tempfile

    client = client_for(api)
    rescan = not no_rescan
    if server_path:
        report, failed = call(api, lambda: client.import_vulndb(None, path, rescan))
    else:
        if not os.path.exists(path):
            print(f"error: {path}: no such file or directory (use --server-path for a "
                  "path on the gateway's host)", file=sys.stderr)
            return 1
        with tempfile.TemporaryFile() as bundle:
            if os.path.isdir(path):
                _osv_zip(path, bundle)
                bundle.seek(0)
                upload: Any = bundle
            else:
                upload = open(path, "rb")  # closed below
            try:
                report, failed = call(api, lambda: client.import_vulndb(upload, None, rescan))
            finally:
                upload.close()
    if failed is not None:
        return failed
    if api.json:
        print_json(report)
        return 0
    ecosystems = ", ".join(f"{k} {v}" for k, v in (report.get("ecosystems") or {}).items())
    print(f"vulnerability database v{report.get('version')} loaded: {report.get('records')} "
          f"records ({ecosystems or 'none'}), {report.get('skipped')} skipped; "
          f"{report.get('rescans') or 0} rescans queued")
    for problem in (report.get("errors") or [])[:10]:
        print(f"  skipped: {problem}")
    return 0


def _osv_zip(path: str, out: Any) -> None:
    """Write one zip holding every OSV .json file under `path` and every .json member of the
    .zip archives there (what the gateway imports as one database)."""
    import zipfile
    from pathlib import Path

    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".zip"))
    if not files:
        raise FileNotFoundError(f"no .json or .zip OSV files under {root}")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bundle:
        for n, file in enumerate(files):
            if file.suffix == ".json":
                bundle.write(file, f"{n}/{file.name}")
                continue
            with zipfile.ZipFile(file) as archive:
                for member in archive.infolist():
                    if member.filename.endswith(".json") and not member.is_dir():
                        with archive.open(member) as src, bundle.open(
                                f"{n}/{member.filename}", "w") as dst:
                            shutil.copyfileobj(src, dst, 1024 * 1024)
