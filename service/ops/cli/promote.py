"""`tagwarden promote` and `tagwarden rollback`: moving environments through the API, with an
Idempotency-Key (and, for a rollback, the expected digest) derived from the CI run."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from service.ops.cli.common import (
    CONTEXT,
    Api,
    api_options,
    call,
    ci_idempotency_key,
    ci_run,
    ci_run_prefix,
    client_for,
    exclusive,
    one_line,
    print_json,
    source_text,
    violation_lines,
)

EXIT_CODES = ("exit status: 0 success, 2 refused by policy (or a dry run that would be), "
              "1 any other error")
F = TypeVar("F", bound=Callable[..., Any])


def move_options(expected_help: str, key_help: str) -> Callable[[F], F]:
    """--reason, --expected-digest and --idempotency-key: what every move of an environment
    takes (promote, rollback)."""
    def wrap(command: F) -> F:
        for option in reversed((
                click.option("--reason", metavar="TEXT", help="why (recorded in the history)"),
                click.option("--expected-digest", metavar="D", help=expected_help),
                click.option("--idempotency-key", metavar="KEY", help=key_help))):
            command = option(command)
        return command
    return wrap


@click.command(
    "promote", context_settings=CONTEXT, short_help="promote a tag, digest or environment's digest",
    help="Promote a digest into an environment (POST /api/v1/promotions). Without "
         "--idempotency-key, a key is derived from the CI run (GitLab, GitHub Actions, "
         "Buildkite, CircleCI, Jenkins) so that a retried step replays the first answer "
         "instead of promoting twice.", epilog=EXIT_CODES)
@click.option("--repository", required=True, metavar="REPO",
              help="registry repository, e.g. team/app")
@click.option("--tag", help="promote the digest this tag points to")
@click.option("--digest", metavar="sha256:...", help="promote this digest")
@click.option("--from", "from_env", metavar="ENV", help="promote what environment ENV points to")
@click.option("--to", required=True, metavar="ENV", help="target environment")
@move_options("refuse (409) unless the target points to this digest now",
              "retrying with the same key replays the first answer")
@click.option("--dry-run", is_flag=True, help="only say whether the promotion would be allowed")
@api_options()
def promote(api: Api, repository: str, tag: str | None, digest: str | None,
            from_env: str | None, to: str, reason: str | None, expected_digest: str | None,
            dry_run: bool, idempotency_key: str | None) -> int:
    """POST /api/v1/promotions."""
    exclusive({"tag": tag, "digest": digest, "from_env": from_env},
              {"tag": "--tag", "digest": "--digest", "from_env": "--from"}, required=True)
    if tag:
        source = {"tag": tag}
    elif digest:
        source = {"digest": digest}
    else:
        source = {"from_environment": str(from_env)}
    body: dict[str, Any] = {"repository": repository, "environment": to, **source}
    if reason is not None:
        body["reason"] = reason
    if expected_digest:
        body["expected_digest"] = expected_digest
    if dry_run:
        body["dry_run"] = True
    key, hint = idempotency_key, None
    if key is None and not dry_run:
        derived = ci_idempotency_key(repository, to, source)
        if derived is not None:
            key = derived[0]
            hint = (f"the Idempotency-Key was derived from the CI run ({derived[1]}); "
                    "pass --idempotency-key to choose another")
    client = client_for(api)
    record, failed = call(api, lambda: client.promote(body, key), hint)
    if failed is not None:
        return failed
    if dry_run:
        return _print_dry_run(api, repository, to, record)
    same = record.get("previous_digest") == record.get("digest")
    _print_done(api, client, record,
                f"promoted {record.get('repository')} to {record.get('environment')}: "
                f"{record.get('digest')}" + (" (unchanged, recorded again)" if same else ""))
    return 0


def _print_dry_run(api: Api, repository: str, to: str, record: dict[str, Any]) -> int:
    """Whether the promotion would be allowed; 0 if so, 2 if not."""
    allowed = bool(record.get("allowed"))
    if api.json:
        print_json(record)
        return 0 if allowed else 2
    what = (f"dry run: promoting {repository} {source_text(record.get('source'))} "
            f"({record.get('digest')}) to {to}")
    if allowed:
        print(f"{what} would be allowed by policy '{record.get('policy')}'")
        return 0
    print(f"{what} would be denied")
    print("\n".join(violation_lines(record.get("violations") or [], record.get("policy"),
                                    "DENIED")))
    return 2


def _print_done(api: Api, client: Any, record: dict[str, Any], line: str) -> None:
    """The answer's line (after `replayed: ` when it is the first attempt's answer again)."""
    if client.replayed:
        line = f"replayed: {line} (the first answer to this Idempotency-Key; nothing changed now)"
    if api.json:
        if client.replayed:
            print(line, file=sys.stderr)
        print_json(record)
        return
    print(line)
    rows = [("id", record.get("id")), ("source", source_text(record.get("source"))),
            ("previous", record.get("previous_digest") or "none"),
            ("tags", ", ".join(record.get("tags") or []) or "-"),
            ("policy", record.get("policy")), ("actor", record.get("actor")),
            ("reason", one_line(record.get("reason"))), ("at", record.get("created_at"))]
    for label, value in rows:
        print(f"  {label:<9} {value if value is not None else '-'}")


def _rollback_expectation(client: Any, repository: str, env: str, key: str,
                          run: tuple[str, str, str, dict[str, str]]) -> tuple[str | None, str]:
    """(expected digest, where it came from) for a rollback run in CI, the same on every retry:
    the digest before this step's own earlier rollback when there was one (its retry then
    replays), else the digest this CI run promoted into the environment, else (a run that
    only rolls back) what the environment points to now."""
    items = client.promotions(repository, env, 500).get("items") or []
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
                    f"{env} of {repository} has moved since {run[2]} promoted "
                    f"{record.get('digest')} ({record.get('id')}): the newest record is "
                    f"{newest.get('kind')} {newest.get('id')} by {newest.get('actor')} to "
                    f"{newest.get('digest')}; nothing was rolled back")})
            return record.get("digest"), f"what {run[2]} promoted ({record.get('id')})"
    state = client.environments(repository)
    current = next((e.get("digest") for e in state.get("environments") or []
                    if e.get("name") == env), None)
    return current, f"what {env} pointed to when {run[2]} first rolled back"


@click.command(
    "rollback", context_settings=CONTEXT, short_help="roll an environment back",
    help="Move an environment back to its previous digest or to an earlier promotion (POST "
         "/api/v1/rollbacks). In CI, an Idempotency-Key and the expected current digest (what "
         "this run promoted) are derived from the run, so a retried step replays the first "
         "answer and a rollback never undoes another pipeline's release.", epilog=EXIT_CODES)
@click.option("--repository", required=True, metavar="REPO")
@click.option("--env", required=True, metavar="ENV", help="environment to roll back")
@click.option("--to", default="previous", metavar="previous|PROMOTION_ID",
              help="the previous digest (default) or a promotion id of ENV")
@move_options("refuse (409) unless ENV points to this digest now (in CI: derived from the "
              "run, so a retried step never rolls back twice)",
              "retrying with the same key replays the first answer (in CI: derived from the "
              "run)")
@api_options()
def rollback(api: Api, repository: str, env: str, to: str, reason: str | None,
             expected_digest: str | None, idempotency_key: str | None) -> int:
    """POST /api/v1/rollbacks."""
    body: dict[str, Any] = {"repository": repository, "environment": env, "to": to}
    if reason is not None:
        body["reason"] = reason
    client = client_for(api)
    key, expected, hint = idempotency_key, expected_digest, None
    run = ci_run()
    if key is None and run is not None:
        key = ci_idempotency_key(repository, env, {"rollback": to})[0]  # type: ignore[index]
        hint = (f"the Idempotency-Key was derived from the CI run ({run[2]}); "
                "pass --idempotency-key to choose another")
    if expected is None and run is not None and key is not None:
        step_key = key
        derived, failed = call(
            api, lambda: _rollback_expectation(client, repository, env, step_key, run),
            f"--expected-digest is derived from the CI run ({run[2]}); pass --expected-digest "
            "to roll back anyway")
        if failed is not None:
            return failed
        expected, why = derived
        hint = (f"the Idempotency-Key and --expected-digest {expected} ({why}) were derived "
                f"from the CI run ({run[2]}); pass --idempotency-key or --expected-digest to "
                "choose others")
    if expected is not None:
        body["expected_digest"] = expected
    record, failed = call(api, lambda: client.rollback(body, key), hint)
    if failed is not None:
        return failed
    _print_done(api, client, record, f"rolled back {record.get('repository')} "
                f"{record.get('environment')} to {record.get('digest')}")
    return 0
