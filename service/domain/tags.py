"""Tag and repository grammar, built-in tag classes and class specs (`semver`, `regex:...`)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection, Sequence

import re2
import semver

# distribution's tag grammar; re.ASCII because the registry's \w is ASCII only.
TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
# distribution's path component is `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`. `-+` accepts
# the same language as `[-]*` (an empty separator adds nothing) but avoids the nested
# `x+(y*x+)*` shape that backtracks exponentially on a long name ending in a bad character.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
NAME_MAX = 255
TAG_MAX = 128
REGEX_MAX = 256

ENVIRONMENT = "environment"
LATEST = "latest"
SEMVER = "semver"
GIT_SHA = "git-sha"
OTHER = "other"
CLASSES = (ENVIRONMENT, LATEST, SEMVER, GIT_SHA, OTHER)
REGEX_PREFIX = "regex:"

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is the caller's 4xx, not a log line

_GIT_SHA_RE = re.compile(r"(?:git-sha-|sha-)[0-9a-f]{7,40}|[0-9a-f]{40}")

Matcher = Callable[[str, Collection[str]], bool]


def valid_tag(tag: str) -> bool:
    """True when `tag` follows the registry's tag grammar."""
    return isinstance(tag, str) and TAG_RE.fullmatch(tag) is not None


def tag_problem(tag: str) -> str | None:
    """Why `tag` breaks the registry's tag grammar (None when it does not)."""
    if valid_tag(tag):
        return None
    if len(tag) > 128:
        return f"a tag is at most 128 characters; this one has {len(tag)}"
    if not tag:
        return "a tag cannot be empty"
    if not re.fullmatch(r"[\w.-]+", tag, re.ASCII):
        return "a tag holds only letters, digits, '_', '.' and '-'"
    return "a tag cannot start with '.' or '-'"


REPOSITORY_GRAMMAR = ("lowercase letters and digits, separated by '.', '_', '__', '-' or '/' "
                      "(e.g. team/app)")


def valid_repository(name: str) -> bool:
    """True when `name` follows the registry's repository name grammar."""
    return isinstance(name, str) and len(name) <= NAME_MAX and NAME_RE.fullmatch(name) is not None


def parse_semver(tag: str) -> semver.Version | None:
    """The SemVer 2.0.0 version a tag spells (optional leading `v`), or None."""
    text = tag[1:] if tag.startswith("v") else tag
    if not text[:1].isdigit():
        return None
    try:
        return semver.Version.parse(text)
    except ValueError:
        return None


def is_semver(tag: str) -> bool:
    """True when the tag is SemVer 2.0.0 with an optional leading `v`."""
    return parse_semver(tag) is not None


def is_git_sha(tag: str) -> bool:
    """True for `git-sha-<7..40 hex>`, `sha-<7..40 hex>` or a bare 40-hex commit (lowercase)."""
    return _GIT_SHA_RE.fullmatch(tag) is not None


def classify(tag: str, environments: Collection[str]) -> str:
    """The built-in class of a tag: environment, latest, semver, git-sha or other."""
    if tag in environments:
        return ENVIRONMENT
    if tag == LATEST:
        return LATEST
    if is_semver(tag):
        return SEMVER
    if is_git_sha(tag):
        return GIT_SHA
    return OTHER


def semver_key(tag: str) -> semver.Version:
    """Sort key with semver.org precedence (build metadata ignored); ValueError if not semver."""
    version = parse_semver(tag)
    if version is None:
        raise ValueError(f"tag {tag!r} is not a semantic version")
    return version.replace(build=None)


def validate_spec(spec: str) -> None:
    """Raise ValueError naming the problem when `spec` is neither a class nor an RE2 regex."""
    compile_matcher(spec)


@functools.lru_cache(maxsize=1024)
def compile_matcher(spec: str) -> Matcher:
    """A callable(tag, environments) -> bool for a class spec; ValueError when invalid."""
    if not isinstance(spec, str):
        raise ValueError("a tag class spec must be a string")
    if spec.startswith(REGEX_PREFIX):
        regex = _compile_regex(spec[len(REGEX_PREFIX) :])

        def match_regex(tag: str, environments: Collection[str]) -> bool:
            # Tags longer than the registry allows never reach the regex.
            return len(tag) <= TAG_MAX and regex.search(tag) is not None

        return match_regex
    if spec in CLASSES:

        def match_class(tag: str, environments: Collection[str]) -> bool:
            return classify(tag, environments) == spec

        return match_class
    raise ValueError(
        f"unknown tag class {spec!r}: use one of {', '.join(CLASSES)} or regex:<pattern>"
    )


def matches_any(tag: str, specs: Sequence[str], environments: Collection[str]) -> bool:
    """True when the tag matches at least one of the class specs."""
    return any(compile_matcher(spec)(tag, environments) for spec in specs)


@functools.lru_cache(maxsize=1024)
def _compile_regex(pattern: str) -> re2._Regexp:
    # RE2 matches in time linear in the tag whatever the pattern (no backtracking), so a
    # policy's regex cannot stall a push; the price is RE2's syntax: no backreferences, no
    # lookaround, repeat counts up to 1000.
    if not pattern:
        raise ValueError("empty regex")
    if len(pattern) > REGEX_MAX:
        raise ValueError(f"regex longer than {REGEX_MAX} characters")
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(
            exc.args[0], bytes) else str(exc)
        raise ValueError(f"invalid regex {pattern!r}: {reason} (RE2 syntax: no "
                         "backreferences or lookaround)") from None
