"""`tagwarden approve` and `tagwarden verify`: approvals and verification evidence through the
API (TAGWARDEN_URL / TAGWARDEN_TOKEN, like the other CI subcommands)."""

from __future__ import annotations

import argparse
import sys
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
)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _digest_of(args: argparse.Namespace, client: Any, environment: str | None
               ) -> tuple[str | None, int | None]:
    """(--digest, or the digest `environment` points to now) or (None, exit code)."""
    if args.digest:
        return args.digest, None
    if not environment:
        return None, _fail("give --digest, or the environment whose digest it is")
    state, failed = _call(args, lambda: client.environments(args.repository))
    if failed is not None:
        return None, failed
    found = next((e.get("digest") for e in state.get("environments") or ()
                  if e.get("name") == environment), None)
    if not found:
        return None, _fail(f"environment {environment!r} of {args.repository} points to "
                           "nothing yet; pass --digest")
    return found, None


def _page(args: argparse.Namespace, fetch: Any, header: list[str], row: Any) -> int:
    page, failed = _call(args, fetch)
    if failed is not None:
        return failed
    if args.json:
        _print_json(page)
        return 0
    items = page.get("items") or []
    if not items:
        print("nothing recorded")
        return 0
    print(_table(header, [row(item) for item in items]))
    if page.get("next_cursor"):
        print(f"(more: --limit above {args.limit})", file=sys.stderr)
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    """POST /api/v1/approvals; --list: GET /api/v1/approvals; --withdraw: DELETE one."""
    client = _client(args)
    if args.withdraw:
        done, failed = _call(args, lambda: client.withdraw_approval(args.withdraw))
        if failed is not None:
            return failed
        if args.json:
            _print_json(done)
        else:
            print(f"withdrew approval {done.get('id')} of {done.get('repository')} "
                  f"{done.get('digest')} for {done.get('environment')} (given by "
                  f"{done.get('approver')})")
        return 0
    if not args.repository:
        return _fail("--repository is required")
    if args.list:
        return _page(args, lambda: client.approvals(
            repository=args.repository, environment=args.env, digest=args.digest,
            limit=args.limit), ["CREATED", "ID", "ENV", "DIGEST", "APPROVER", "STATUS",
                                "EXPIRES", "COMMENT"],
            lambda a: [a.get("created_at") or "-", a.get("id") or "-",
                       a.get("environment") or "-", _short(a.get("digest")),
                       a.get("approver") or "-", a.get("status") or "-",
                       a.get("expires_at") or "-", _one_line(a.get("comment"))])
    if not args.env:
        return _fail("--env (the environment the approval is for) is required")
    digest, failed = _digest_of(args, client, args.from_env)
    if failed is not None:
        return failed
    body: dict[str, Any] = {"repository": args.repository, "environment": args.env,
                            "digest": digest}
    if args.comment is not None:
        body["comment"] = args.comment
    if getattr(args, "hotfix", False):
        body["hotfix"] = True
    made, failed = _call(args, lambda: client.approve(body))
    if failed is not None:
        return failed
    if args.json:
        _print_json(made)
        return 0
    print(f"approved {made.get('repository')} {made.get('digest')} for "
          f"{made.get('environment')} as {made.get('approver')!r}: {made.get('id')} "
          f"(valid until {made.get('expires_at')})")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """POST /api/v1/verifications; --list: GET /api/v1/verifications."""
    client = _client(args)
    if args.list:
        return _page(args, lambda: client.verifications(
            repository=args.repository, digest=args.digest, environment=args.env,
            limit=args.limit), ["CREATED", "ENV", "DIGEST", "CHECK", "RESULT", "BY", "URL"],
            lambda v: [v.get("created_at") or "-", v.get("environment") or "-",
                       _short(v.get("digest")), v.get("name") or "-", v.get("result") or "-",
                       v.get("recorded_by") or "-", v.get("url") or "-"])
    if not (args.env and args.name and args.result):
        return _fail("--env, --name and --result are required to record a result")
    digest, failed = _digest_of(args, client, args.env)
    if failed is not None:
        return failed
    body: dict[str, Any] = {"repository": args.repository, "digest": digest,
                            "environment": args.env, "name": args.name, "result": args.result}
    if args.result_url:
        body["url"] = args.result_url
    if args.details:
        body["details"] = args.details
    made, failed = _call(args, lambda: client.verify(body))
    if failed is not None:
        return failed
    if args.json:
        _print_json(made)
        return 0
    print(f"recorded {made.get('name')} {made.get('result')} for {made.get('repository')} "
          f"{made.get('digest')} in {made.get('environment')}: {made.get('id')}")
    return 0


def _verify_api_options() -> argparse.ArgumentParser:
    """The shared API options, with the gateway's URL as --api-url: in `verify`, --url is the
    URL of the check's run (`--url $CI_JOB_URL`)."""
    parent = argparse.ArgumentParser(add_help=False)
    for action in _api_options()._actions:
        flags = ["--api-url"] if action.dest == "url" else list(action.option_strings)
        kwargs: dict[str, Any] = {"dest": action.dest, "default": action.default,
                                  "help": action.help}
        if action.nargs == 0:  # a flag (--json)
            kwargs["action"] = "store_true"
        else:
            kwargs.update(type=action.type, metavar=action.metavar)
        parent.add_argument(*flags, **kwargs)
    return parent


def add_evidence_parsers(sub: Any, api: argparse.ArgumentParser) -> None:
    """approve and verify (each parser carries its handler)."""
    approve = sub.add_parser(
        "approve", parents=[api], help="approve a digest for an environment (or list/withdraw)",
        description="Approve a digest for an environment (POST /api/v1/approvals): the token "
                    "is the approver, and the policy's approvals gate decides whether it may. "
                    "The digest is --digest, or what --from ENV points to now.",
        epilog="exit status: 0 success, 1 any error (403: this token may not approve)")
    approve.set_defaults(handler=cmd_approve)
    approve.add_argument("--repository", metavar="REPO", help="registry repository")
    approve.add_argument("--env", metavar="ENV", help="the environment the approval is for")
    what = approve.add_mutually_exclusive_group()
    what.add_argument("--digest", metavar="sha256:...", help="the digest approved")
    what.add_argument("--from", dest="from_env", metavar="ENV",
                      help="approve the digest ENV points to now (e.g. staging)")
    approve.add_argument("--comment", metavar="TEXT", help="why (recorded with the approval)")
    approve.add_argument("--hotfix", action="store_true",
                         help="a hotfix approval (counted by the policy's hotfix.approvals)")
    mode = approve.add_mutually_exclusive_group()
    mode.add_argument("--list", action="store_true",
                      help="list approvals of --repository (filtered by --env, --digest)")
    mode.add_argument("--withdraw", metavar="APPROVAL_ID",
                      help="withdraw an approval (yours, or any as an admin)")
    approve.add_argument("--limit", type=_positive(int), default=50, metavar="N")

    verify = sub.add_parser(
        "verify", parents=[_verify_api_options()],
        help="record a check result for a digest in an environment",
        description="Record a check's result against a digest in an environment (POST "
                    "/api/v1/verifications), e.g. acceptance tests that ran against staging. "
                    "The digest is --digest, or what --env points to now.",
        epilog="exit status: 0 recorded (whatever the result), 1 any error")
    verify.set_defaults(handler=cmd_verify)
    verify.add_argument("--repository", required=True, metavar="REPO")
    verify.add_argument("--env", metavar="ENV", help="the environment the check ran in")
    verify.add_argument("--digest", metavar="sha256:...",
                        help="the digest checked (default: what --env points to now)")
    verify.add_argument("--name", metavar="CHECK", help="the check's name, e.g. acceptance")
    verify.add_argument("--result", choices=("passed", "failed"))
    verify.add_argument("--url", dest="result_url", metavar="URL",
                        help="where the run is, e.g. $CI_JOB_URL")
    verify.add_argument("--details", metavar="TEXT", help="a short summary")
    verify.add_argument("--list", action="store_true",
                        help="list results of --repository (filtered by --env, --digest)")
    verify.add_argument("--limit", type=_positive(int), default=50, metavar="N")
