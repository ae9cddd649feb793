"""The `tagwarden` command: dev stack, worker, registry config and CI subcommands."""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any

from service.ops.cli.common import (
    _api_options,
    _call,
    _client,
    _one_line,
    _positive,
    _print_json,
    _short,
    _table,
    _violation_lines,
)


def cmd_dev(args: argparse.Namespace) -> int:
    """Run the whole stack on loopback (what `make run` and `make run-ha` call)."""
    from service.ops.stack import run

    return run(ha=args.ha)


def cmd_worker(args: argparse.Namespace) -> int:
    """Run one RQ worker on Tagwarden's queue."""
    from workers.main import run_worker

    run_worker(burst=args.burst)
    return 0


def _write_out(out: str, text: str) -> None:
    """Write a rendered config to a file, or to stdout for `-`."""
    if out == "-":
        sys.stdout.write(text)
    else:
        with open(out, "w", encoding="utf-8") as handle:
            handle.write(text)


def cmd_registry_config(args: argparse.Namespace) -> int:
    """Write the registry config (compose runs this once before the registry starts)."""
    from service.ops.registry_config import render_registry_config

    token = os.environ.get("TAGWARDEN_WEBHOOK_TOKEN", "")
    secret = os.environ.get("REGISTRY_HTTP_SECRET", "")
    if not token or not secret:
        print("tagwarden registry-config: set TAGWARDEN_WEBHOOK_TOKEN and REGISTRY_HTTP_SECRET",
              file=sys.stderr)
        return 1
    text = render_registry_config(
        data_dir=args.data_dir, addr=args.addr, secret=secret,
        webhook_url=args.webhook_url, webhook_token=token,
    )
    _write_out(args.out, text)
    return 0


def cmd_nginx_config(args: argparse.Namespace) -> int:
    """Write the front proxy's nginx.conf (blob GETs served by nginx after the gateway's
    authorization; run the gateway with TAGWARDEN_BLOB_ACCEL_PATH set to --accel-path)."""
    from service.ops.registry_config import render_nginx_config

    try:
        text = render_nginx_config(listen=args.listen, gateway=args.gateway,
                                   storage=args.storage, run_dir=args.run_dir,
                                   accel_path=args.accel_path)
    except ValueError as exc:
        print(f"tagwarden nginx-config: {exc}", file=sys.stderr)
        return 2
    _write_out(args.out, text)
    return 0


# -- CI subcommands: promote, rollback, history, status (HTTP API via service.ops.client) ---------

# CI systems: (name, variable naming the run, variables that survive a retry of the step).
# Deliberately no attempt counters or job ids (GITHUB_RUN_ATTEMPT, CI_JOB_ID): those change
# when a step is retried, and a retried step must replay the first answer, not promote again.
CI_SYSTEMS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("gitlab", "CI_PIPELINE_ID", ("CI_PROJECT_ID", "CI_JOB_NAME")),
    ("github", "GITHUB_RUN_ID", ("GITHUB_REPOSITORY", "GITHUB_WORKFLOW", "GITHUB_JOB",
                                 "GITHUB_ACTION")),
    ("buildkite", "BUILDKITE_BUILD_ID", ("BUILDKITE_STEP_ID",)),
    ("circleci", "CIRCLE_WORKFLOW_ID", ("CIRCLE_JOB",)),
    ("jenkins", "BUILD_TAG", ("STAGE_NAME",)),
)


def ci_run(env: dict[str, str] | None = None) -> tuple[str, str, str, dict[str, str]] | None:
    """(system, run id, "VAR=value", step variables) of the CI run this process is part of."""
    env = os.environ if env is None else env
    for name, run_var, step_vars in CI_SYSTEMS:
        run_id = env.get(run_var, "").strip()
        if run_id:
            return name, run_id, f"{run_var}={run_id}", {v: env.get(v, "") for v in step_vars}
    return None


def ci_run_prefix(system: str, run_id: str) -> str:
    """What every key derived within one CI run starts with (how a rollback step finds the
    promotions its own run made)."""
    material = json.dumps({"v": 2, "ci": system, "run": run_id}, sort_keys=True)
    return f"tagwarden-{system}-{hashlib.sha256(material.encode()).hexdigest()[:16]}-"


def ci_idempotency_key(repository: str, environment: str, source: dict[str, str],
                       env: dict[str, str] | None = None) -> tuple[str, str] | None:
    """(key, where it came from) for a call made by a known CI system, else None.
    Stable across retries of the same step; different for another repository, target or
    source, and for another pipeline run."""
    run = ci_run(env)
    if run is None:
        return None
    system, run_id, where, step = run
    material = {"v": 2, "step": step, "repository": repository, "environment": environment,
                "source": source}
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:32]
    return ci_run_prefix(system, run_id) + digest, where


def _source_text(source: dict[str, Any] | None) -> str:
    if not source:
        return "-"
    # a rollback carries {"digest", "promotion"}: the promotion it went back to says more
    kind = next((k for k in ("promotion", "environment", "tag", "digest") if source.get(k)),
                next(iter(source)))
    value = source[kind]
    label = {"environment": "env", "promotion": "rollback-to"}.get(kind, kind)
    value = _short(value) if kind == "digest" else str(value)
    return f"{label} {value}"


def cmd_promote(args: argparse.Namespace) -> int:
    """POST /api/v1/promotions."""
    if args.tag:
        source = {"tag": args.tag}
    elif args.digest:
        source = {"digest": args.digest}
    else:
        source = {"from_environment": args.from_env}
    body: dict[str, Any] = {"repository": args.repository, "environment": args.to, **source}
    if args.reason is not None:
        body["reason"] = args.reason
    if args.expected_digest:
        body["expected_digest"] = args.expected_digest
    if args.dry_run:
        body["dry_run"] = True
    key, hint = args.idempotency_key, None
    if key is None and not args.dry_run:
        derived = ci_idempotency_key(args.repository, args.to, source)
        if derived is not None:
            key = derived[0]
            hint = (f"the Idempotency-Key was derived from the CI run ({derived[1]}); "
                    "pass --idempotency-key to choose another")
    client = _client(args)
    record, failed = _call(args, lambda: client.promote(body, key), hint)
    if failed is not None:
        return failed
    if args.dry_run:
        allowed = bool(record.get("allowed"))
        if args.json:
            _print_json(record)
            return 0 if allowed else 2
        what = (f"dry run: promoting {args.repository} {_source_text(record.get('source'))} "
                f"({record.get('digest')}) to {args.to}")
        if allowed:
            print(f"{what} would be allowed by policy '{record.get('policy')}'")
            return 0
        print(f"{what} would be denied")
        print("\n".join(_violation_lines(record.get("violations") or [], record.get("policy"),
                                         "DENIED")))
        return 2
    same = record.get("previous_digest") == record.get("digest")
    _print_done(args, client, record,
                f"promoted {record.get('repository')} to {record.get('environment')}: "
                f"{record.get('digest')}" + (" (unchanged, recorded again)" if same else ""))
    return 0


def _print_done(args: argparse.Namespace, client: Any, record: dict[str, Any], line: str
                ) -> None:
    """The answer's line (after `replayed: ` when it is the first attempt's answer again)."""
    if client.replayed:
        line = f"replayed: {line} (the first answer to this Idempotency-Key; nothing changed now)"
    if args.json:
        if client.replayed:
            print(line, file=sys.stderr)
        _print_json(record)
        return
    print(line)
    _print_record(record)


def _print_record(record: dict[str, Any]) -> None:
    rows = [("id", record.get("id")), ("source", _source_text(record.get("source"))),
            ("previous", record.get("previous_digest") or "none"),
            ("tags", ", ".join(record.get("tags") or []) or "-"),
            ("policy", record.get("policy")), ("actor", record.get("actor")),
            ("reason", _one_line(record.get("reason"))), ("at", record.get("created_at"))]
    for label, value in rows:
        print(f"  {label:<9} {value if value is not None else '-'}")


def _rollback_expectation(client: Any, args: argparse.Namespace, key: str,
                          run: tuple[str, str, str, dict[str, str]]) -> tuple[str | None, str]:
    """(expected digest, where it came from) for a rollback run in CI, the same on every retry:
    the digest before this step's own earlier rollback when there was one (its retry then
    replays), else the digest this CI run promoted into the environment, else (a run that
    only rolls back) what the environment points to now."""
    items = client.promotions(args.repository, args.env, 500).get("items") or []
    for record in items:
        if record.get("kind") == "rollback" and record.get("idempotency_key") == key:
            return record.get("previous_digest"), f"this step's rollback {record.get('id')}"
    from service.ops.client import ApiError

    prefix = ci_run_prefix(run[0], run[1])
    for record in items:
        if record.get("kind") != "rollback" and str(record.get("idempotency_key") or ""
                                                     ).startswith(prefix):
            newest = items[0]
            if newest.get("id") != record.get("id"):  # the environment moved on since
                raise ApiError(409, {"code": "conflict", "message": (
                    f"{args.env} of {args.repository} has moved since {run[2]} promoted "
                    f"{record.get('digest')} ({record.get('id')}): the newest record is "
                    f"{newest.get('kind')} {newest.get('id')} by {newest.get('actor')} to "
                    f"{newest.get('digest')}; nothing was rolled back")})
            return record.get("digest"), f"what {run[2]} promoted ({record.get('id')})"
    state = client.environments(args.repository)
    current = next((e.get("digest") for e in state.get("environments") or []
                    if e.get("name") == args.env), None)
    return current, f"what {args.env} pointed to when {run[2]} first rolled back"


def cmd_rollback(args: argparse.Namespace) -> int:
    """POST /api/v1/rollbacks."""
    body: dict[str, Any] = {"repository": args.repository, "environment": args.env,
                            "to": args.to}
    if args.reason is not None:
        body["reason"] = args.reason
    client = _client(args)
    key, expected, hint = args.idempotency_key, args.expected_digest, None
    run = ci_run()
    if key is None and run is not None:
        key = ci_idempotency_key(args.repository, args.env, {"rollback": args.to})[0]  # type: ignore[index]
        hint = (f"the Idempotency-Key was derived from the CI run ({run[2]}); "
                "pass --idempotency-key to choose another")
    if expected is None and run is not None and key is not None:
        derived, failed = _call(args, lambda: _rollback_expectation(client, args, key, run),
                                "--expected-digest is derived from the CI run "
                                f"({run[2]}); pass --expected-digest to roll back anyway")
        if failed is not None:
            return failed
        expected, why = derived
        hint = (f"the Idempotency-Key and --expected-digest {expected} ({why}) were derived "
                f"from the CI run ({run[2]}); pass --idempotency-key or --expected-digest to "
                "choose others")
    if expected is not None:
        body["expected_digest"] = expected
    record, failed = _call(args, lambda: client.rollback(body, key), hint)
    if failed is not None:
        return failed
    _print_done(args, client, record, f"rolled back {record.get('repository')} "
                f"{record.get('environment')} to {record.get('digest')}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """GET /api/v1/promotions (every page with --all)."""
    client = _client(args)

    def fetch() -> dict[str, Any]:
        if not args.all:
            return client.promotions(args.repository, args.env, args.limit)
        items: list[dict[str, Any]] = []
        for page in client.iter_promotions(args.repository, args.env, args.limit):
            items += page.get("items") or []
        return {"items": items, "next_cursor": None}

    page, failed = _call(args, fetch)
    if failed is not None:
        return failed
    if args.json:
        _print_json(page)
        return 0
    items = page.get("items") or []
    if not items:
        where = f" in {args.env}" if args.env else ""
        print(f"no promotions of {args.repository}{where}")
        return 0
    rows = [[r.get("created_at") or "-", r.get("environment") or "-", r.get("kind") or "-",
             _short(r.get("digest")), _source_text(r.get("source")),
             _one_line(r.get("actor")), _one_line(r.get("reason"))] for r in items]
    print(_table(["TIME", "ENV", "KIND", "DIGEST", "SOURCE", "ACTOR", "REASON"], rows))
    if page.get("next_cursor"):
        print(f"(more: --all, or --limit above {args.limit})", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """GET /api/v1/environments."""
    at = args.at
    if at is not None:
        at = _utc_time(at)
        if at is None:
            print(f"error: --at {args.at!r} is not a time: use RFC 3339, e.g. "
                  "2026-11-24T03:12:00Z (a time without a zone is read as UTC)", file=sys.stderr)
            return 1
    client = _client(args)
    state, failed = _call(args, lambda: client.environments(args.repository, at))
    if failed is not None:
        return failed
    if args.json:
        _print_json(state)
        return 0
    print(f"{state.get('repository', args.repository)} at {state.get('at') or 'now'}")
    rows = [[e.get("name") or "-", e.get("digest") or "-", e.get("promoted_at") or "-",
             ", ".join(e.get("tags") or []) or "-"] for e in state.get("environments") or []]
    print(_table(["ENV", "DIGEST", "PROMOTED_AT", "TAGS"], rows))
    return 0


def _utc_time(text: str) -> str | None:
    """An RFC 3339 time for the API; a time without a zone is read as UTC (None: no time)."""
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def add_ci_parsers(sub: Any) -> None:
    """promote, rollback, history and status."""
    api = _api_options()
    exit_codes = ("exit status: 0 success, 2 refused by policy (or a dry run that would be), "
                  "1 any other error")
    promote = sub.add_parser(
        "promote", parents=[api], help="promote a tag, digest or environment's digest",
        description="Promote a digest into an environment (POST /api/v1/promotions). "
                    "Without --idempotency-key, a key is derived from the CI run (GitLab, "
                    "GitHub Actions, Buildkite, CircleCI, Jenkins) so that a retried step "
                    "replays the first answer instead of promoting twice.",
        epilog=exit_codes)
    promote.add_argument("--repository", required=True, metavar="REPO",
                         help="registry repository, e.g. team/app")
    source = promote.add_mutually_exclusive_group(required=True)
    source.add_argument("--tag", help="promote the digest this tag points to")
    source.add_argument("--digest", metavar="sha256:...", help="promote this digest")
    source.add_argument("--from", dest="from_env", metavar="ENV",
                        help="promote what environment ENV points to")
    promote.add_argument("--to", required=True, metavar="ENV", help="target environment")
    promote.add_argument("--reason", metavar="TEXT", help="why (recorded in the history)")
    promote.add_argument("--expected-digest", metavar="D",
                         help="refuse (409) unless the target points to this digest now")
    promote.add_argument("--dry-run", action="store_true",
                         help="only say whether the promotion would be allowed")
    promote.add_argument("--idempotency-key", metavar="KEY",
                         help="retrying with the same key replays the first answer")

    rollback = sub.add_parser(
        "rollback", parents=[api], help="roll an environment back",
        description="Move an environment back to its previous digest or to an earlier "
                    "promotion (POST /api/v1/rollbacks). In CI, an Idempotency-Key and the "
                    "expected current digest (what this run promoted) are derived from the "
                    "run, so a retried step replays the first answer and a rollback never "
                    "undoes another pipeline's release.", epilog=exit_codes)
    rollback.add_argument("--repository", required=True, metavar="REPO")
    rollback.add_argument("--env", required=True, metavar="ENV", help="environment to roll back")
    rollback.add_argument("--to", default="previous", metavar="previous|PROMOTION_ID",
                          help="the previous digest (default) or a promotion id of ENV")
    rollback.add_argument("--reason", metavar="TEXT")
    rollback.add_argument("--expected-digest", metavar="D",
                          help="refuse (409) unless ENV points to this digest now (in CI: "
                               "derived from the run, so a retried step never rolls back twice)")
    rollback.add_argument("--idempotency-key", metavar="KEY",
                          help="retrying with the same key replays the first answer (in CI: "
                               "derived from the run)")

    history = sub.add_parser(
        "history", parents=[api], help="promotion history, newest first",
        description="Promotions and rollbacks, newest first (GET /api/v1/promotions).")
    history.add_argument("--repository", required=True, metavar="REPO")
    history.add_argument("--env", metavar="ENV", help="only this environment")
    history.add_argument("--limit", type=_positive(int), default=50, metavar="N",
                         help="records per page (default: 50, max 500)")
    history.add_argument("--all", action="store_true", help="follow next_cursor to the end")

    status = sub.add_parser(
        "status", parents=[api], help="what each environment points to",
        description="Each environment's digest, promotion time and tags, now or at a time "
                    "(GET /api/v1/environments).")
    status.add_argument("--repository", required=True, metavar="REPO")
    status.add_argument("--at", metavar="RFC3339",
                        help="as it was at this time (e.g. 2026-11-24T03:12:00Z; without a "
                             "zone: UTC)")

    scan = sub.add_parser(
        "scan", parents=[api], help="scan a tag or digest (and wait for the verdict)",
        description="Request a scan (POST /api/v1/scans); with --wait, poll it until it has "
                    "succeeded or failed.",
        epilog="exit status: 0 queued (or, with --wait, succeeded), 1 failed or any error")
    scan.add_argument("--repository", required=True, metavar="REPO")
    what = scan.add_mutually_exclusive_group(required=True)
    what.add_argument("--tag", help="scan the digest this tag points to")
    what.add_argument("--digest", metavar="sha256:...", help="scan this digest")
    scan.add_argument("--wait", action="store_true", help="wait until the scan has finished")
    scan.add_argument("--wait-timeout", type=_positive(float), default=1800.0,
                      metavar="SECONDS", help="give up waiting after this long (default: 1800)")


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand and its flags."""
    parser = argparse.ArgumentParser(prog="tagwarden", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="run redis, registry, gateway and worker on loopback")
    dev.add_argument("--ha", action="store_true", help="Redis primary, replica and three "
                     "sentinels, two workers (what `make run-ha` runs)")
    worker = sub.add_parser("worker", help="run an RQ worker")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    reg = sub.add_parser("registry-config", help="render the registry's config.yml")
    reg.add_argument("--data-dir", default="/var/lib/registry")
    reg.add_argument("--addr", default="0.0.0.0:5000")
    reg.add_argument("--webhook-url", default="http://gateway:8080/api/v1/webhooks/registry")
    reg.add_argument("--out", default="-")
    ngx = sub.add_parser("nginx-config", help="render nginx.conf for the front-proxy deployment "
                         "(blob GETs served by nginx after the gateway authorized them)")
    ngx.add_argument("--listen", default="0.0.0.0:80", help="address nginx listens on")
    ngx.add_argument("--gateway", default="127.0.0.1:8080", help="the gateway's host:port")
    ngx.add_argument("--storage", default="/var/lib/registry",
                     help="the registry's filesystem storage root (rootdirectory)")
    ngx.add_argument("--run-dir", default="/var/lib/tagwarden-nginx",
                     help="pid file, error log and temp files")
    ngx.add_argument("--accel-path", default="/_tagwarden/blobs/",
                     help="internal location; the gateway's TAGWARDEN_BLOB_ACCEL_PATH")
    ngx.add_argument("--out", default="-")
    spec = sub.add_parser("openapi", help="write openapi.yaml from the routes and schemas")
    spec.add_argument("--out", default="openapi.yaml", help="file to write (- for stdout)")
    vulndb = sub.add_parser("vulndb", help="manage the offline vulnerability database")
    vulndb_sub = vulndb.add_subparsers(dest="vulndb_command", required=True)
    vimport = vulndb_sub.add_parser(
        "import", parents=[_api_options(timeout=600.0)],
        help="load an OSV export (JSON files, all.zip) through the API",
        description="Upload an OSV export to POST /api/v1/vulndb/imports (admin token): a zip "
                    "is sent as it is, a directory of .json files and/or all.zip archives is "
                    "zipped first; with --server-path, PATH is read on the gateway's host.")
    vimport.add_argument("path", help="an OSV zip, or a directory of OSV JSON files and/or "
                                      "all.zip archives")
    vimport.add_argument("--server-path", action="store_true",
                         help="PATH is on the gateway's host (nothing is uploaded)")
    vimport.add_argument("--no-rescan", action="store_true",
                         help="do not queue rescans of the digests environments point to")
    add_ci_parsers(sub)
    from service.ops.cli.evidence import add_evidence_parsers

    add_evidence_parsers(sub, _api_options())
    from service.ops.cli.dr import add_dr_parsers

    add_dr_parsers(sub)
    add_gc_parser(sub)
    return parser


def add_gc_parser(sub: Any) -> None:
    """`tagwarden gc`: the registry's garbage collection after retention deleted manifests."""
    gc = sub.add_parser("gc", help="run the registry's garbage collection (registry stopped or "
                        "read-only!) and report the bytes reclaimed on disk")
    gc.add_argument("--config", required=True, help="the registry's config.yml")
    gc.add_argument("--registry-binary", default="docker-registry",
                    help="the distribution binary (`registry` in the registry:2 image)")
    gc.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    gc.add_argument("--json", action="store_true", help="print the result as JSON")


def cmd_gc(args: argparse.Namespace) -> int:
    """Run the registry's garbage collection; print the bytes it reclaimed on disk."""
    from pathlib import Path

    from service.core.gc import GCError, collect

    try:
        result = collect(Path(args.config), args.registry_binary, args.dry_run)
    except GCError as exc:
        print(f"tagwarden gc: {exc}", file=sys.stderr)
        return 1
    if args.json:
        _print_json(result)
    else:
        print(f"reclaimed {result['bytes_reclaimed']} bytes in {result['storage']} "
              f"({result['bytes_before']} -> {result['bytes_after']}"
              f"{', dry run' if result['dry_run'] else ''})")
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    """Write openapi.yaml, generated from the routes and schemas."""
    from service.http.app import openapi_yaml

    _write_out(args.out, openapi_yaml())
    if args.out != "-":
        print(f"wrote {args.out}", file=sys.stderr)
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


def cmd_vulndb(args: argparse.Namespace) -> int:
    """Import an OSV export through the API: a zip is uploaded, a directory zipped and
    uploaded, or (--server-path) a path on the gateway's host is named."""
    import tempfile

    client = _client(args)
    rescan = not args.no_rescan
    if args.server_path:
        report, failed = _call(args, lambda: client.import_vulndb(None, args.path, rescan))
    else:
        if not os.path.exists(args.path):
            print(f"error: {args.path}: no such file or directory (use --server-path for a "
                  "path on the gateway's host)", file=sys.stderr)
            return 1
        with tempfile.TemporaryFile() as bundle:
            if os.path.isdir(args.path):
                _osv_zip(args.path, bundle)
                bundle.seek(0)
                upload = bundle
            else:
                upload = open(args.path, "rb")  # closed below
            try:
                report, failed = _call(args, lambda: client.import_vulndb(upload, None, rescan))
            finally:
                upload.close()
    if failed is not None:
        return failed
    if args.json:
        _print_json(report)
        return 0
    ecosystems = ", ".join(f"{k} {v}" for k, v in (report.get("ecosystems") or {}).items())
    print(f"vulnerability database v{report.get('version')} loaded: {report.get('records')} "
          f"records ({ecosystems or 'none'}), {report.get('skipped')} skipped; "
          f"{report.get('rescans') or 0} rescans queued")
    for problem in (report.get("errors") or [])[:10]:
        print(f"  skipped: {problem}")
    return 0


SCAN_POLL_SECONDS = 1.0


def cmd_scan(args: argparse.Namespace) -> int:
    """POST /api/v1/scans, then (--wait) poll the scan until it finished."""
    import time

    client = _client(args)
    scan, failed = _call(args, lambda: client.scan(args.repository, args.tag or args.digest))
    if failed is not None:
        return failed
    deadline = time.monotonic() + args.wait_timeout
    while args.wait and scan.get("status") in ("queued", "running"):
        if time.monotonic() > deadline:
            print(f"error: scan {scan.get('id')} still {scan.get('status')} after "
                  f"{args.wait_timeout:g}s", file=sys.stderr)
            return 1
        time.sleep(SCAN_POLL_SECONDS)
        scan, failed = _call(args, functools.partial(client.get_scan, str(scan["id"])))
        if failed is not None:
            return failed
    if args.json:
        _print_json(scan)
    status = scan.get("status")
    line = f"scan {scan.get('id')} of {args.repository} {scan.get('digest')}: {status}"
    if status == "succeeded":
        summary = scan.get("summary") or {}
        line += " (" + ", ".join(f"{k} {summary.get(k, 0)}" for k in
                                 ("critical", "high", "medium", "low", "unknown")) + ")"
    elif status == "failed":
        line += f": {scan.get('error')}"
    print(line, file=sys.stderr if args.json else sys.stdout)
    return 1 if status == "failed" else 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "dev": cmd_dev,
    "worker": cmd_worker,
    "registry-config": cmd_registry_config,
    "nginx-config": cmd_nginx_config,
    "promote": cmd_promote,
    "rollback": cmd_rollback,
    "history": cmd_history,
    "status": cmd_status,
    "vulndb": cmd_vulndb,
    "scan": cmd_scan,
    "openapi": cmd_openapi,
    "gc": cmd_gc,
}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run one subcommand; a failure is one line on stderr, exit 1,
    never a traceback."""
    args = build_parser().parse_args(argv)
    handler = getattr(args, "handler", None)  # subcommands of other modules bring their own
    try:
        return handler(args) if handler is not None else COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the user gets one line, not a traceback
        print(f"tagwarden {args.command}: error: {_describe(exc)}", file=sys.stderr)
        return 1


def _describe(exc: BaseException) -> str:
    """One line naming the failure (for Redis: which address could not be reached)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


if __name__ == "__main__":
    raise SystemExit(main())
