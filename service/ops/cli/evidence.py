"""`tagwarden approve` and `tagwarden verify`: approvals and verification evidence through the
API (TAGWARDEN_URL / TAGWARDEN_TOKEN, like the other CI subcommands)."""

from __future__ import annotations

from typing import Any

import click

from service.ops.cli.common import (
    CONTEXT,
    POSITIVE_INT,
    Api,
    api_options,
    call,
    client_for,
    exclusive,
    fail,
    one_line,
    print_json,
    print_page,
    short,
)


def _digest_of(api: Api, client: Any, repository: str, digest: str | None,
               environment: str | None) -> tuple[str | None, int | None]:
    """(--digest, or the digest `environment` points to now) or (None, exit code)."""
    if digest:
        return digest, None
    if not environment:
        return None, fail("give --digest, or the environment whose digest it is")
    state, failed = call(api, lambda: client.environments(repository))
    if failed is not None:
        return None, failed
    found = next((e.get("digest") for e in state.get("environments") or ()
                  if e.get("name") == environment), None)
    if not found:
        return None, fail(f"environment {environment!r} of {repository} points to "
                          "nothing yet; pass --digest")
    return found, None


NOTHING = "nothing recorded"


def more_than(limit: int) -> str:
    """The hint that a listing has more than one page."""
    return f"(more: --limit above {limit})"


def _withdraw(api: Api, client: Any, approval_id: str) -> int:
    done, failed = call(api, lambda: client.withdraw_approval(approval_id))
    if failed is not None:
        return failed
    if api.json:
        print_json(done)
    else:
        print(f"withdrew approval {done.get('id')} of {done.get('repository')} "
              f"{done.get('digest')} for {done.get('environment')} (given by "
              f"{done.get('approver')})")
    return 0


@click.command(
    "approve", context_settings=CONTEXT,
    short_help="approve a digest for an environment (or list/withdraw)",
    help="Approve a digest for an environment (POST /api/v1/approvals): the token is the "
         "approver, and the policy's approvals gate decides whether it may. The digest is "
         "--digest, or what --from ENV points to now.",
    epilog="exit status: 0 success, 1 any error (403: this token may not approve)")
@click.option("--repository", metavar="REPO", help="registry repository")
@click.option("--env", metavar="ENV", help="the environment the approval is for")
@click.option("--digest", metavar="sha256:...", help="the digest approved")
@click.option("--from", "from_env", metavar="ENV",
              help="approve the digest ENV points to now (e.g. staging)")
@click.option("--comment", metavar="TEXT", help="why (recorded with the approval)")
@click.option("--hotfix", is_flag=True,
              help="a hotfix approval (counted by the policy's hotfix.approvals)")
@click.option("--list", "listing", is_flag=True,
              help="list approvals of --repository (filtered by --env, --digest)")
@click.option("--withdraw", metavar="APPROVAL_ID",
              help="withdraw an approval (yours, or any as an admin)")
@click.option("--limit", type=POSITIVE_INT, default=50, metavar="N", show_default=True)
@api_options()
def approve(api: Api, repository: str | None, env: str | None, digest: str | None,
            from_env: str | None, comment: str | None, hotfix: bool, listing: bool,
            withdraw: str | None, limit: int) -> int:
    """POST /api/v1/approvals; --list: GET /api/v1/approvals; --withdraw: DELETE one."""
    exclusive({"digest": digest, "from_env": from_env},
              {"digest": "--digest", "from_env": "--from"}, required=False)
    exclusive({"listing": listing, "withdraw": withdraw},
              {"listing": "--list", "withdraw": "--withdraw"}, required=False)
    client = client_for(api)
    if withdraw:
        return _withdraw(api, client, withdraw)
    if not repository:
        return fail("--repository is required")
    if listing:
        return print_page(api, lambda: client.approvals(
            repository=repository, environment=env, digest=digest, limit=limit),
            ["CREATED", "ID", "ENV", "DIGEST", "APPROVER", "STATUS", "EXPIRES", "COMMENT"],
            lambda a: [a.get("created_at") or "-", a.get("id") or "-",
                       a.get("environment") or "-", short(a.get("digest")),
                       a.get("approver") or "-", a.get("status") or "-",
                       a.get("expires_at") or "-", one_line(a.get("comment"))],
            NOTHING, more_than(limit))
    if not env:
        return fail("--env (the environment the approval is for) is required")
    approved, failed = _digest_of(api, client, repository, digest, from_env)
    if failed is not None:
        return failed
    body: dict[str, Any] = {"repository": repository, "environment": env, "digest": approved}
    if comment is not None:
        body["comment"] = comment
    if hotfix:
        body["hotfix"] = True
    made, failed = call(api, lambda: client.approve(body))
    if failed is not None:
        return failed
    if api.json:
        print_json(made)
        return 0
    print(f"approved {made.get('repository')} {made.get('digest')} for "
          f"{made.get('environment')} as {made.get('approver')!r}: {made.get('id')} "
          f"(valid until {made.get('expires_at')})")
    return 0


# in `verify`, --url is the URL of the check's run (`--url $CI_JOB_URL`): the gateway's URL
# is --api-url there
@click.command(
    "verify", context_settings=CONTEXT,
    short_help="record a check result for a digest in an environment",
    help="Record a check's result against a digest in an environment (POST "
         "/api/v1/verifications), e.g. acceptance tests that ran against staging. The digest "
         "is --digest, or what --env points to now.",
    epilog="exit status: 0 recorded (whatever the result), 1 any error")
@click.option("--repository", required=True, metavar="REPO")
@click.option("--env", metavar="ENV", help="the environment the check ran in")
@click.option("--digest", metavar="sha256:...",
              help="the digest checked (default: what --env points to now)")
@click.option("--name", metavar="CHECK", help="the check's name, e.g. acceptance")
@click.option("--result", type=click.Choice(["passed", "failed"]))
@click.option("--url", "result_url", metavar="URL", help="where the run is, e.g. $CI_JOB_URL")
@click.option("--details", metavar="TEXT", help="a short summary")
@click.option("--list", "listing", is_flag=True,
              help="list results of --repository (filtered by --env, --digest)")
@click.option("--limit", type=POSITIVE_INT, default=50, metavar="N", show_default=True)
@api_options(url_flag="--api-url")
def verify(api: Api, repository: str, env: str | None, digest: str | None, name: str | None,
           result: str | None, result_url: str | None, details: str | None, listing: bool,
           limit: int) -> int:
    """POST /api/v1/verifications; --list: GET /api/v1/verifications."""
    client = client_for(api)
    if listing:
        return print_page(api, lambda: client.verifications(
            repository=repository, digest=digest, environment=env, limit=limit),
            ["CREATED", "ENV", "DIGEST", "CHECK", "RESULT", "BY", "URL"],
            lambda v: [v.get("created_at") or "-", v.get("environment") or "-",
                       short(v.get("digest")), v.get("name") or "-", v.get("result") or "-",
                       v.get("recorded_by") or "-", v.get("url") or "-"],
            NOTHING, more_than(limit))
    if not (env and name and result):
        return fail("--env, --name and --result are required to record a result")
    checked, failed = _digest_of(api, client, repository, digest, env)
    if failed is not None:
        return failed
    body: dict[str, Any] = {"repository": repository, "digest": checked, "environment": env,
                            "name": name, "result": result}
    if result_url:
        body["url"] = result_url
    if details:
        body["details"] = details
    made, failed = call(api, lambda: client.verify(body))
    if failed is not None:
        return failed
    if api.json:
        print_json(made)
        return 0
    print(f"recorded {made.get('name')} {made.get('result')} for {made.get('repository')} "
          f"{made.get('digest')} in {made.get('environment')}: {made.get('id')}")
    return 0
