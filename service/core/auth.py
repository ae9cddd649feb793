"""Who is calling, and may they: bearer tokens on /api/v1, Basic on /v2, roles and scopes."""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from service.domain.errors import Forbidden, Unauthorized
from service.domain.tags import valid_repository
from service.registry.routes import BadRoute, V2Route
from service.services import Services
from service.store.tokens import secret_hash

ROLE_RANK = {"reader": 1, "ci": 2, "admin": 3}
BOOTSTRAP_ID = "bootstrap-admin"
GLOB_CHARS = frozenset("*?[")


def glob_within(inner: str, outer: str) -> bool:
    """Whether every name glob `inner` matches is also matched by glob `outer` (conservative:
    False when that cannot be shown cheaply)."""
    if inner == outer or outer == "*":
        return True
    if not GLOB_CHARS.intersection(inner):
        return fnmatch.fnmatchcase(inner, outer)
    prefix = outer[:-1]
    # `prefix*` (no other wildcard) holds every glob that starts with the literal prefix
    return outer.endswith("*") and not GLOB_CHARS.intersection(prefix) and inner.startswith(
        prefix)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    id: str
    name: str
    role: str
    repositories: tuple[str, ...] = ("*",)
    environments: tuple[str, ...] | None = None

    def at_least(self, role: str) -> bool:
        """Whether this caller's role includes `role`."""
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    def covers(self, repository: str) -> bool:
        """Whether a repository is inside this caller's globs."""
        return any(fnmatch.fnmatchcase(repository, g) for g in self.repositories)

    @property
    def unscoped(self) -> bool:
        """Whether the token's globs cover every repository (`*`)."""
        return "*" in self.repositories

    def sees(self, repository: str | None) -> bool:
        """Whether a listed item about `repository` is shown to this caller; an item about no
        repository (a token, a policy) only to an unscoped one."""
        return self.unscoped or (repository is not None and self.covers(repository))

    def sees_globs(self, globs: Iterable[str]) -> bool:
        """Whether every repository the globs match is inside this caller's globs."""
        return self.unscoped or all(any(glob_within(inner, outer) for outer in self.repositories)
                                    for inner in globs)

    def listing_filter(self) -> Callable[[str | None], bool] | None:
        """What a listing keeps for this caller, by repository; None when it keeps all."""
        return None if self.unscoped else self.sees

    def may_enter(self, environment: str) -> bool:
        """Whether this caller may promote into an environment."""
        return self.environments is None or environment in self.environments


def from_secret(svc: Services, secret: str) -> Principal | None:
    """The principal a presented secret authenticates, or None."""
    if not secret or len(secret) > 512:
        return None
    admin = svc.settings.admin_token
    if admin and hmac.compare_digest(secret.encode(), admin.encode()):
        return Principal(BOOTSTRAP_ID, "admin (bootstrap)", "admin")
    meta = svc.tokens.by_secret(secret)
    if meta is None or not hmac.compare_digest(meta["hash"], secret_hash(secret)):
        return None
    expires = meta.get("expires_at")
    if expires and datetime.fromisoformat(expires.replace("Z", "+00:00")) <= datetime.now(UTC):
        return None
    envs = meta.get("environments")
    return Principal(meta["id"], meta["name"], meta["role"],
                     tuple(meta.get("repositories") or ["*"]),
                     tuple(envs) if envs else None)


def from_bearer(svc: Services, header: str | None) -> Principal:
    """`Authorization: Bearer <token>` → principal, or 401."""
    scheme, _, secret = (header or "").partition(" ")
    principal = from_secret(svc, secret.strip()) if scheme.lower() == "bearer" else None
    if principal is None:
        raise Unauthorized("missing, invalid, expired or revoked bearer token"
                           if header else "this API needs Authorization: Bearer <token>")
    return principal


def from_basic(svc: Services, header: str | None) -> Principal | None:
    """HTTP Basic with any user name and a token as the password; None when absent/bad."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() == "bearer":
        return from_secret(svc, encoded.strip())
    if scheme.lower() != "basic":
        return None
    password = basic_password(encoded)
    return from_secret(svc, password) if password else None


def basic_password(encoded: str) -> str | None:
    """The password of HTTP Basic credentials (base64 `user:password`); None when they are
    not base64 of text, "" when the client sent none (`:` or nothing after a challenge)."""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2]


def holds_no_credentials(header: str | None) -> bool:
    """No Authorization, or Basic with an empty password: what a client that holds no token
    sends after the challenge (anonymous, not a failed login)."""
    scheme, _, encoded = (header or "").partition(" ")
    return not header or (scheme.lower() == "basic" and basic_password(encoded) == "")


# -- the management API ---------------------------------------------------------------------
def authorize_api(principal: Principal, role: str, scope: str, body: Any,
                  query: dict[str, str]) -> None:
    """403 naming what is missing when the principal may not make a call that needs `role`
    and scopes what `scope` names (`repository`, `repository+environment`, or "") of the
    body or query (the HTTP layer reads both from the route's metadata)."""
    if not principal.at_least(role):
        raise Forbidden(f"this call needs the {role!r} role; token {principal.name!r} is "
                        f"{principal.role!r}")
    data = body if isinstance(body, dict) else {}
    repository = data.get("repository") or query.get("repository")
    if "repository" in scope and isinstance(repository, str) and not principal.covers(repository):
        raise Forbidden(f"token {principal.name!r} is not allowed on repository {repository!r} "
                        f"(allowed: {', '.join(principal.repositories)})")
    environment = data.get("environment")
    if "environment" in scope and isinstance(environment, str) and not principal.may_enter(
            environment):
        allowed = ", ".join(principal.environments or ())
        raise Forbidden(f"token {principal.name!r} may not promote to {environment!r} "
                        f"(allowed: {allowed})")


# -- the registry API -----------------------------------------------------------------------
def registry_access(method: str, route: V2Route, query: dict[str, str]
                    ) -> list[tuple[str, str]]:
    """(action, repository) pairs a /v2 request needs: pull, push or delete."""
    if route.kind == "base":
        # always challenged: clients send the credentials they hold only after a 401 on
        # this probe (anonymous ones go on without and pull what anonymous_pull allows)
        return [("ping", "")]
    if route.kind == "catalog":
        return [("pull", "")]
    if method in ("GET", "HEAD"):
        return [("pull", route.name)]
    if method == "DELETE":
        # a blob delete unlinks a layer every manifest of the repository may need
        return [("delete blobs of" if route.kind == "blob" else "delete", route.name)]
    needs = [("push", route.name)]
    source = query.get("from")
    if query.get("mount") and source:
        if not valid_repository(source):
            raise BadRoute("NAME_INVALID", "invalid mount source", {"from": source})
        needs.append(("pull", source))
    return needs


def authorize_registry(principal: Principal | None, needs: list[tuple[str, str]],
                       anonymous_pull: bool) -> None:
    """Unauthorized (challenge) or Forbidden for a /v2 request."""
    for action, repository in needs:
        if principal is None:
            if action == "pull" and anonymous_pull:
                continue
            raise Unauthorized("authentication required: log in with a Tagwarden token")
        if action == "ping":
            continue
        needed = "admin" if action == "delete blobs of" else "ci"
        if action != "pull" and not principal.at_least(needed):
            who = "an admin" if needed == "admin" else "a ci or admin"
            raise Forbidden(f"{action} needs {who} token; {principal.name!r} is "
                            f"{principal.role!r}")
        if repository and not principal.covers(repository):
            raise Forbidden(f"token {principal.name!r} is not allowed to {action} "
                            f"{repository!r}")
