"""What the CLI's API subcommands share: the API options, calling the API and reporting its
failures, and the output helpers (`main` and `evidence` of this package both use them)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"
DIGEST_SHORT = 19  # "sha256:" and 12 hex digits


def _print_json(body: Any) -> None:
    print(json.dumps(body, indent=2, sort_keys=False))


def _short(digest: str | None) -> str:
    return digest[:DIGEST_SHORT] if digest else "-"


def _one_line(text: Any) -> str:
    return " ".join(str(text).split()) if text else "-"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell; the last column is not padded."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _violation_lines(violations: list[dict[str, Any]], fallback_policy: str | None,
                     verb: str) -> list[str]:
    """`DENIED by policy 'X':` then `  - [rule] message`, grouped by policy in order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for violation in violations:
        groups.setdefault(str(violation.get("policy") or fallback_policy or "?"),
                          []).append(violation)
    lines = []
    for policy, items in groups.items():
        lines.append(f"{verb} by policy '{policy}':")
        lines += [f"  - [{v.get('rule', '?')}] {v.get('message', '')}" for v in items]
    return lines


def _report_error(exc: Exception, args: argparse.Namespace, hint: str | None = None) -> int:
    """Print an API or connection failure; 2 for a policy denial, 1 for anything else."""
    from service.ops.client import ApiConnectionError, ApiError

    if isinstance(exc, ApiConnectionError):
        if args.json:
            _print_json({"code": "connection_failed", "message": str(exc), "url": exc.url})
        print(f"error: {exc}", file=sys.stderr)
        return 1
    assert isinstance(exc, ApiError)
    if args.json:
        _print_json(exc.body)
    if exc.policy_denied:
        violations = exc.body.get("violations") or []
        lines = _violation_lines(violations, None, "DENIED")
        if not lines:
            lines = [f"DENIED by policy: {exc.message}"]
        print("\n".join(lines), file=sys.stderr)
        return 2
    print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
    errors = exc.body.get("errors")
    if isinstance(errors, dict):
        for field, messages in errors.items():
            if isinstance(messages, list):
                text = "; ".join(str(m) for m in messages)
            else:
                text = str(messages)
            print(f"  {field}: {text}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    return 1


def _client(args: argparse.Namespace) -> Any:
    from service.ops.client import ApiClient

    url = args.url or os.environ.get("TAGWARDEN_URL") or DEFAULT_URL
    token = args.token if args.token is not None else os.environ.get("TAGWARDEN_TOKEN")
    return ApiClient(url, token or None, args.timeout)


def _call(args: argparse.Namespace, fn: Callable[[], Any], hint: str | None = None
          ) -> tuple[Any, int | None]:
    """(result, None) or (None, exit code) after printing the failure."""
    from service.ops.client import ApiConnectionError, ApiError

    try:
        return fn(), None
    except (ApiError, ApiConnectionError) as exc:
        return None, _report_error(exc, args, hint)


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
        return value

    return parse


def _api_options(timeout: float = 60.0) -> argparse.ArgumentParser:
    """--url, --token, --json, --timeout: shared by the CI subcommands."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("API options")
    group.add_argument("--url", default=None,
                       help=f"Tagwarden base URL (default: $TAGWARDEN_URL, else {DEFAULT_URL})")
    group.add_argument("--token", default=None,
                       help="API bearer token (default: $TAGWARDEN_TOKEN; prefer the variable, "
                            "arguments are visible to other processes)")
    group.add_argument("--json", action="store_true",
                       help="print the JSON response (or error body) instead of text")
    group.add_argument("--timeout", type=_positive(float), default=timeout, metavar="SECONDS",
                       help=f"HTTP timeout in seconds (default: {timeout:g})")
    return parent
