"""What the CLI's subcommands share: the API options and calling the API, reporting its
failures, CI detection, and the output helpers."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

DEFAULT_URL = "http://127.0.0.1:8080"
DIGEST_SHORT = 19  # "sha256:" and 12 hex digits
POSITIVE_INT = click.IntRange(min=1)
POSITIVE_FLOAT = click.FloatRange(min=0, min_open=True)
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

F = TypeVar("F", bound=Callable[..., Any])


# -- output -----------------------------------------------------------------------------------


def print_json(body: Any) -> None:
    """The body as indented JSON on stdout."""
    print(json.dumps(body, indent=2, sort_keys=False))


def short(digest: str | None) -> str:
    """A digest cut to its algorithm and 12 hex digits ("-" for none)."""
    return digest[:DIGEST_SHORT] if digest else "-"


def one_line(text: Any) -> str:
    """Text with its whitespace runs (newlines too) folded to one space ("-" for none)."""
    return " ".join(str(text).split()) if text else "-"


def table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell; the last column is not padded."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def violation_lines(violations: list[dict[str, Any]], fallback_policy: str | None,
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


def source_text(source: dict[str, Any] | None) -> str:
    """A promotion's source as `tag v1`, `env staging`, `digest sha256:...`, `rollback-to ID`."""
    if not source:
        return "-"
    # a rollback carries {"digest", "promotion"}: the promotion it went back to says more
    kind = next((k for k in ("promotion", "environment", "tag", "digest") if source.get(k)),
                next(iter(source)))
    value = source[kind]
    label = {"environment": "env", "promotion": "rollback-to"}.get(kind, kind)
    value = short(value) if kind == "digest" else str(value)
    return f"{label} {value}"


def fail(message: str) -> int:
    """`error: message` on stderr; exit status 1."""
    print(f"error: {message}", file=sys.stderr)
    return 1


def write_out(out: str, text: str) -> None:
    """Write a rendered file, or to stdout for `-`."""
    if out == "-":
        sys.stdout.write(text)
    else:
        with open(out, "w", encoding="utf-8") as handle:
            handle.write(text)


def describe(exc: BaseException) -> str:
    """One line naming the failure (for Redis: which address could not be reached)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


def exclusive(ctx_params: dict[str, Any], flags: dict[str, str], required: bool) -> None:
    """Refuse (usage error, exit 2) more than one of `flags` ({param: flag}), or none when
    `required`."""
    given = [flag for name, flag in flags.items() if ctx_params.get(name) not in (None, False)]
    if len(given) > 1:
        raise click.UsageError(f"{given[1]} is not allowed with {given[0]}")
    if required and not given:
        raise click.UsageError(f"one of {', '.join(flags.values())} is required")


# -- the API ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Api:
    """The API options of a subcommand: where, with which token, and how to print."""

    url: str | None
    token: str | None
    json: bool
    timeout: float


def api_options(timeout: float = 60.0, url_flag: str = "--url") -> Callable[[F], F]:
    """--url, --token, --json, --timeout, handed to the command as `api`."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, url: str | None, token: str | None, as_json: bool,
                    timeout: float, **kwargs: Any) -> Any:
            return fn(*args, api=Api(url, token, as_json, timeout), **kwargs)

        options = [
            click.option(url_flag, "url", default=None, metavar="URL",
                         help=f"Tagwarden base URL (default: $TAGWARDEN_URL, else {DEFAULT_URL})"),
            click.option("--token", default=None, metavar="TOKEN",
                         help="API bearer token (default: $TAGWARDEN_TOKEN; prefer the "
                              "variable, arguments are visible to other processes)"),
            click.option("--json", "as_json", is_flag=True,
                         help="print the JSON response (or error body) instead of text"),
            click.option("--timeout", type=POSITIVE_FLOAT, default=timeout, metavar="SECONDS",
                         help=f"HTTP timeout in seconds (default: {timeout:g})"),
        ]
        decorated: Any = wrapper
        for option in reversed(options):
            decorated = option(decorated)
        return decorated  # type: ignore[no-any-return]

    return decorate


def client_for(api: Api) -> Any:
    """An ApiClient for the options (TAGWARDEN_URL and TAGWARDEN_TOKEN when not given)."""
    from service.ops.client import ApiClient

    url = api.url or os.environ.get("TAGWARDEN_URL") or DEFAULT_URL
    token = api.token if api.token is not None else os.environ.get("TAGWARDEN_TOKEN")
    return ApiClient(url, token or None, api.timeout)


def report_error(exc: Exception, api: Api, hint: str | None = None) -> int:
    """Print an API or connection failure; 2 for a policy denial, 1 for anything else."""
    from service.ops.client import ApiConnectionError, ApiError

    if isinstance(exc, ApiConnectionError):
        if api.json:
            print_json({"code": "connection_failed", "message": str(exc), "url": exc.url})
        print(f"error: {exc}", file=sys.stderr)
        return 1
    assert isinstance(exc, ApiError)
    if api.json:
        print_json(exc.body)
    if exc.policy_denied:
        violations = exc.body.get("violations") or []
        lines = violation_lines(violations, None, "DENIED")
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


def call(api: Api, fn: Callable[[], Any], hint: str | None = None) -> tuple[Any, int | None]:
    """(result, None) or (None, exit code) after printing the failure."""
    from service.ops.client import ApiConnectionError, ApiError

    try:
        return fn(), None
    except (ApiError, ApiConnectionError) as exc:
        return None, report_error(exc, api, hint)


def print_page(api: Api, fetch: Callable[[], Any], header: list[str],
               row: Callable[[dict[str, Any]], list[str]], empty: str, more: str) -> int:
    """Fetch one page of a listing and print it: as JSON with --json, else a table of its
    items (`empty` when there are none, `more` on stderr when a next page exists)."""
    page, failed = call(api, fetch)
    if failed is not None:
        return failed
    if api.json:
        print_json(page)
        return 0
    items = page.get("items") or []
    if not items:
        print(empty)
        return 0
    print(table(header, [row(item) for item in items]))
    if page.get("next_cursor"):
        print(more, file=sys.stderr)
    return 0


# -- CI detection -----------------------------------------------------------------------------

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
    env = dict(os.environ) if env is None else env
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
