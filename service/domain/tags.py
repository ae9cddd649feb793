"""Tag and repository grammar, built-in tag classes and class specs (`semver`, `regex:...`)."""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Collection, Sequence
from re import _constants as sre_c  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

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
    """Raise ValueError naming the problem when `spec` is not a class name or a safe regex."""
    compile_matcher(spec)


@functools.lru_cache(maxsize=1024)
def compile_matcher(spec: str) -> Matcher:
    """A callable(tag, environments) -> bool for a class spec; ValueError when invalid."""
    if not isinstance(spec, str):
        raise ValueError("a tag class spec must be a string")
    if spec.startswith(REGEX_PREFIX):
        regex = _compile_regex(spec[len(REGEX_PREFIX) :])

        def match_regex(tag: str, environments: Collection[str]) -> bool:
            # Tags longer than the registry allows never reach the regex: bounded input
            # plus the catastrophic-pattern check below bounds the matching time.
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
def _compile_regex(pattern: str) -> re.Pattern[str]:
    if not pattern:
        raise ValueError("empty regex")
    if len(pattern) > REGEX_MAX:
        raise ValueError(f"regex longer than {REGEX_MAX} characters")
    try:
        parsed = sre_parse.parse(pattern)
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex: {exc}") from None
    problem = _catastrophic(list(parsed))
    if problem:
        raise ValueError(f"regex rejected, it could backtrack catastrophically: {problem}")
    return compiled


# --- catastrophic backtracking heuristic -------------------------------------------------
# Exponential backtracking needs a repeated group whose body can match the same text in
# more than one way. Walking the parsed pattern (re's own parser, so escapes and classes
# are read exactly as re reads them), two shapes are rejected inside any repeat whose
# maximum is above one:
#   * an inner repeat (`(a+)+`, `(a*)*`, `(\w+\s?)*`) whose characters can also start what
#     follows it: the next element of the body, or the next iteration when the rest of the
#     body may be empty. `(\.[0-9]+)*` and `([a-z]+-)*` stay allowed: a fixed character
#     different from the repeated ones separates the iterations;
#   * an alternation (`(a|a)*`, `(x|\w)+`) whose branches can start with the same character,
#     or where more than one branch can match the empty string.
# Character sets are approximated (None means "any character"); the check errs on the side
# of rejecting. Polynomial patterns are not rejected: tags are at most 128 characters.

_CharSet = frozenset[str] | None
_CATEGORIES: dict[Any, frozenset[str]] = {
    sre_c.CATEGORY_DIGIT: frozenset(string.digits),
    sre_c.CATEGORY_WORD: frozenset(string.ascii_letters + string.digits + "_"),
    sre_c.CATEGORY_SPACE: frozenset(string.whitespace),
}
_REPEATS = (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT)


def _union(a: _CharSet, b: _CharSet) -> _CharSet:
    return None if a is None or b is None else a | b


def _overlap(a: _CharSet, b: _CharSet) -> bool:
    if a is None or b is None:
        return True
    return bool(a & b)


def _in_set(items: list) -> _CharSet:
    chars: set[str] = set()
    for op, av in items:
        if op is sre_c.LITERAL:
            chars.add(chr(av))
        elif op is sre_c.RANGE and av[1] - av[0] <= 256:
            chars.update(chr(c) for c in range(av[0], av[1] + 1))
        elif op is sre_c.CATEGORY and av in _CATEGORIES:
            chars |= _CATEGORIES[av]
        else:
            return None  # negation, wide ranges, other categories: treat as any
    return frozenset(chars)


def _first(seq: list) -> tuple[_CharSet, bool]:
    """Characters that can start a match of `seq`, and whether it can match empty."""
    acc: _CharSet = frozenset()
    for op, av in seq:
        chars, nullable = _first_item(op, av)
        acc = _union(acc, chars)
        if not nullable:
            return acc, False
    return acc, True


def _first_item(op: Any, av: Any) -> tuple[_CharSet, bool]:
    if op is sre_c.LITERAL:
        return frozenset(chr(av)), False
    if op is sre_c.IN:
        return _in_set(list(av)), False
    if op in (sre_c.ANY, sre_c.NOT_LITERAL):
        return None, False
    if op in _REPEATS or op is getattr(sre_c, "POSSESSIVE_REPEAT", None):
        low, _high, body = av
        chars, nullable = _first(list(body))
        return chars, nullable or low == 0
    if op is sre_c.SUBPATTERN:
        return _first(list(av[3]))
    if op is getattr(sre_c, "ATOMIC_GROUP", None):
        return _first(list(av))
    if op is sre_c.BRANCH:
        acc: _CharSet = frozenset()
        any_nullable = False
        for alt in av[1]:
            chars, nullable = _first(list(alt))
            acc = _union(acc, chars)
            any_nullable = any_nullable or nullable
        return acc, any_nullable
    if op in (sre_c.AT, sre_c.ASSERT, sre_c.ASSERT_NOT):
        return frozenset(), True
    return None, True  # group references and conditionals: unknown


def _children(op: Any, av: Any) -> list[list]:
    if op in _REPEATS or op is getattr(sre_c, "POSSESSIVE_REPEAT", None):
        return [list(av[2])]
    if op is sre_c.SUBPATTERN:
        return [list(av[3])]
    if op is getattr(sre_c, "ATOMIC_GROUP", None):
        return [list(av)]
    if op is sre_c.BRANCH:
        return [list(alt) for alt in av[1]]
    if op in (sre_c.ASSERT, sre_c.ASSERT_NOT):
        return [list(av[1])]
    if op is sre_c.GROUPREF_EXISTS:
        return [list(x) for x in av[1:] if x is not None]
    return []


def _catastrophic(seq: list) -> str | None:
    """A description of the first dangerous construct in a parsed pattern, or None."""
    for op, av in seq:
        if op in _REPEATS and av[1] > 1:
            problem = _ambiguous_body(_unwrap(list(av[2])))
            if problem:
                return problem
        for child in _children(op, av):
            problem = _catastrophic(child)
            if problem:
                return problem
    return None


def _unwrap(body: list) -> list:
    while len(body) == 1 and body[0][0] is sre_c.SUBPATTERN:
        body = list(body[0][1][3])
    return body


def _ambiguous_body(body: list) -> str | None:
    start, _ = _first(body)
    for index, (op, av) in enumerate(body):
        if op in _REPEATS and av[1] > 1:
            repeated, _ = _first(list(av[2]))
            follow, nullable = _first(body[index + 1 :])
            if nullable:
                follow = _union(follow, start)
            if _overlap(repeated, follow):
                return "nested quantifier, e.g. (a+)+"
        problem = _ambiguous_nested(op, av)
        if problem:
            return problem
    return None


def _ambiguous_nested(op: Any, av: Any) -> str | None:
    if op is sre_c.BRANCH:
        alternatives = [list(alt) for alt in av[1]]
        texts = [repr(alt) for alt in alternatives]
        if len(set(texts)) < len(texts):
            return "overlapping alternatives in a repeated group, e.g. (a|a)*"
        firsts = [_first(alt) for alt in alternatives]
        if sum(1 for _, nullable in firsts if nullable) > 1:
            return "alternatives that can both match empty, e.g. (a|)*"
        for i, (chars, _) in enumerate(firsts):
            for other, _ in firsts[i + 1 :]:
                if _overlap(chars, other):
                    return "overlapping alternatives in a repeated group, e.g. (a|a)*"
    for child in _children(op, av):
        # A repeat anywhere deeper inside a repeated body is suspicious: reject it.
        for inner_op, inner_av in child:
            if inner_op in _REPEATS and inner_av[1] > 1:
                return "nested quantifier, e.g. (a+)+"
            problem = _ambiguous_nested(inner_op, inner_av)
            if problem:
                return problem
    return None
