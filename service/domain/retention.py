"""Retention that knows environments: which digests of a repository stay, and why (issue 19).

Pure selection over a snapshot of one repository (no Redis, no registry): every digest the
snapshot knows to exist is either kept, with *all* the reasons it is kept, or may go. What is
never deleted: what an environment points to (and a digest still carrying an environment
tag), the last `keep_per_environment` distinct earlier digests of each environment (its
rollback targets, numbered as `POST /rollbacks` would reach them: #1 is "previous"), the
newest `keep_releases` digests carrying a `semver` or `git-sha` tag, anything pushed within
`keep_newer_than`, digests something is still working on (a promotion in flight, a pending
approval, a scan), untagged digests when `delete_untagged` is off, the children of every
kept index and the referrers (SBOMs, signatures) of every kept digest. A digest's tags all
go with it (the registry removes them together), so a digest is deleted only when none of its
tags is kept: keeping is decided per digest.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from croniter import croniter

from service.domain.policy_model import Retention
from service.domain.tags import GIT_SHA, SEMVER, classify, parse_semver

RELEASE_CLASSES = (SEMVER, GIT_SHA)


@dataclass
class RepositorySnapshot:
    """What retention knows of one repository at the start of a run."""

    repository: str
    environments: tuple[str, ...]
    present: set[str]  # manifest digests known to exist in the registry
    tags: dict[str, list[str]] = field(default_factory=dict)  # digest -> its tags
    pointers: dict[str, str] = field(default_factory=dict)  # environment -> digest
    env_tags: dict[str, str] = field(default_factory=dict)  # environment tag -> digest (map)
    # environment -> distinct digests it pointed to, newest first (the current one included)
    history: dict[str, list[str]] = field(default_factory=dict)
    pushed: dict[str, float] = field(default_factory=dict)  # digest -> first seen (epoch s)
    children: dict[str, list[str]] = field(default_factory=dict)  # index -> its manifests
    busy: dict[str, list[str]] = field(default_factory=dict)  # digest -> work in progress
    subjects: dict[str, str] = field(default_factory=dict)  # referrer -> its subject (OCI 1.1)


@dataclass
class Selection:
    """The outcome for one repository: kept digests with every reason, and the deletions in a
    safe order (an index before its children)."""

    kept: dict[str, list[str]]
    deleted: list[str]


def valid_schedule(expression: str) -> bool:
    """Whether a retention schedule is a 5-field cron expression croniter understands."""
    return (isinstance(expression, str) and len(expression.split()) == 5
            and croniter.is_valid(expression))


def last_fire(expression: str, now: datetime) -> datetime:
    """The newest time at or before `now` the cron expression names."""
    fired: datetime = croniter(expression, now + timedelta(seconds=1)).get_prev(datetime)
    return fired


def age_text(seconds: float) -> str:
    """`2 days`, `3 hours`, `1 minute`, `12 seconds`: the largest whole unit."""
    seconds = max(0, int(seconds))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def release_label(tags: Iterable[str], environments: tuple[str, ...]) -> str | None:
    """The tag naming a digest as a release (its highest semver tag, else its first git-sha
    tag), or None when it carries neither."""
    semvers = [t for t in tags if classify(t, environments) == SEMVER]
    if semvers:
        return max(sorted(semvers), key=lambda t: _version_key(t))
    shas = sorted(t for t in tags if classify(t, environments) == GIT_SHA)
    return shas[0] if shas else None


def _version_key(tag: str) -> tuple:
    version = parse_semver(tag)
    if version is None:
        return (0,)
    return (1, version.replace(build=None))  # semver.org precedence, build metadata ignored


def newest_releases(snap: RepositorySnapshot, count: int) -> list[tuple[str, str]]:
    """(digest, naming tag) of the newest `count` releases: by push time, then by version."""
    found = []
    for digest in snap.present:
        label = release_label(snap.tags.get(digest, ()), snap.environments)
        if label is not None:
            found.append((snap.pushed.get(digest, float("inf")), _version_key(label), digest,
                          label))
    found.sort(key=lambda f: (f[0], f[1], f[2]), reverse=True)
    return [(digest, label) for _, _, digest, label in found[:count]]


def select(snap: RepositorySnapshot, rules: Retention, now: float) -> Selection:
    """Which digests of the snapshot stay (each with all its reasons) and which may go."""
    reasons: dict[str, list[str]] = defaultdict(list)
    for env in snap.environments:
        if snap.pointers.get(env):
            reasons[snap.pointers[env]].append(f"{env} points here")
    for env in snap.environments:
        tagged = snap.env_tags.get(env)
        if tagged and tagged != snap.pointers.get(env):
            reasons[tagged].append(f"environment tag '{env}'")
    for env in snap.environments:
        earlier = [d for d in snap.history.get(env, ()) if d != snap.pointers.get(env)]
        for n, digest in enumerate(earlier[:rules.keep_per_environment], start=1):
            reasons[digest].append(f"rollback target #{n} of {env}")
    for digest, label in newest_releases(snap, rules.keep_releases):
        reasons[digest].append(f"release {label} among the newest {rules.keep_releases}")
    children_of_any = {c for d in snap.present for c in snap.children.get(d, ())}
    for digest in sorted(snap.present):
        pushed = snap.pushed.get(digest)
        if pushed is None:
            reasons[digest].append("push time unknown")
        elif now - pushed < rules.keep_newer_than:
            reasons[digest].append(f"pushed {age_text(now - pushed)} ago")
        if snap.busy.get(digest):
            reasons[digest].extend(snap.busy[digest])
        if (not rules.delete_untagged and not snap.tags.get(digest)
                and digest not in children_of_any):
            reasons[digest].append("untagged, and delete_untagged is off")
    _keep_dependents(snap, reasons)
    kept = {d: reasons[d] for d in sorted(snap.present) if reasons.get(d)}
    doomed = snap.present - kept.keys()
    return Selection(kept=kept, deleted=parents_first(doomed, snap.children))


def _keep_dependents(snap: RepositorySnapshot, reasons: dict[str, list[str]]) -> None:
    """Every manifest a kept index holds, and every referrer of a kept digest, stays with it
    (nested indexes, a signature of an SBOM, ... included)."""
    referrers: dict[str, list[str]] = defaultdict(list)
    for referrer, subject in sorted(snap.subjects.items()):
        if referrer in snap.present:
            referrers[subject].append(referrer)
    frontier = sorted(d for d, why in reasons.items() if why)
    done: set[str] = set()
    while frontier:
        digest = frontier.pop(0)
        if digest in done:
            continue
        done.add(digest)
        dependents = [(c, f"in kept index {digest}") for c in snap.children.get(digest, ())]
        dependents += [(r, f"referrer of kept {digest}") for r in referrers.get(digest, ())]
        for dependent, why in dependents:
            if why not in reasons[dependent]:
                reasons[dependent].append(why)
            if dependent not in done:
                frontier.append(dependent)


def parents_first(doomed: set[str], children: dict[str, list[str]]) -> list[str]:
    """The digests to delete, each index before the manifests it holds (never leave an index
    pointing at a deleted child); otherwise sorted."""
    waiting: dict[str, int] = {d: 0 for d in doomed}
    for parent in doomed:
        for child in set(children.get(parent, ())):
            if child in waiting and child != parent:
                waiting[child] += 1
    ready = sorted(d for d, n in waiting.items() if n == 0)
    order: list[str] = []
    while ready:
        digest = ready.pop(0)
        order.append(digest)
        for child in sorted(set(children.get(digest, ()))):
            if child in waiting and child != digest:
                waiting[child] -= 1
                if waiting[child] == 0:
                    ready.append(child)
        ready.sort()
    if len(order) < len(doomed):  # digests make a cycle impossible; should one appear,
        order.extend(sorted(doomed - set(order)))  # the rest goes last
    return order


def bytes_of(parsed: object, manifest_size: int) -> tuple[int, dict[str, int]]:
    """(the manifest's own size plus the sizes its config and layers declare, {blob: size})."""
    blobs: dict[str, int] = {}
    if isinstance(parsed, dict):
        config = parsed.get("config")
        layers = parsed.get("layers")
        for item in ([config] if isinstance(config, dict) else []) + (
                layers if isinstance(layers, list) else []):
            if isinstance(item, dict) and isinstance(item.get("digest"), str):
                size = item.get("size")
                blobs[item["digest"]] = size if type(size) is int and size >= 0 else 0
    return manifest_size + sum(blobs.values()), blobs
