"""The registry's catalog read by the gateway, cut to the caller's scopes (GET /v2/_catalog is
answered from it by service.http.v2.catalog; upload mounts look for a source with it).

The registry lists every repository; a token scoped to `team-a/*` must only learn of those its
globs cover. So the gateway reads the registry's catalog itself (pages of up to 1000, following
its Link), keeps what the caller covers and pages the result with the client's `n` and `last`:
a page is full unless the catalog ends, and its `Link` names the last repository shown.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from urllib.parse import parse_qs, urlencode, urlsplit

from service.domain.errors import RegistryUnavailable
from service.registry.client import RegistryClient

log = logging.getLogger("tagwarden.catalog")

DEFAULT_N = 100  # distribution 2.8's page when `n` is absent
MAX_N = 1000
UPSTREAM_N = 1000
MAX_UPSTREAM_PAGES = 1000  # a million repositories; past that the answer ends there


def _upstream_next(link: str | None, repositories: list[str]) -> str | None:
    """The `last` of the registry's next page (from its Link), None when this was the last."""
    if not link or not repositories:
        return None
    target = link.partition("<")[2].partition(">")[0]
    values = parse_qs(urlsplit(target).query).get("last")
    return values[0] if values else repositories[-1]


def scan(client: RegistryClient, last: str, wanted: int, keep: Callable[[str], bool]
          ) -> list[str]:
    """Up to `wanted` repositories after `last` that `keep` accepts, in catalog order."""
    found: list[str] = []
    cursor: str | None = last
    for _ in range(MAX_UPSTREAM_PAGES):
        query = urlencode({"n": UPSTREAM_N, **({"last": cursor} if cursor else {})})
        upstream = client.read("GET", f"/v2/_catalog?{query}",
                               headers={"Accept": "application/json"})
        try:
            repositories = [r for r in json.loads(upstream.data).get("repositories") or []
                            if isinstance(r, str)] if upstream.status == 200 else None
        except (ValueError, AttributeError):
            repositories = None
        if repositories is None:
            raise RegistryUnavailable(f"registry answered {upstream.status} to GET /v2/_catalog "
                                      "without a repository list")
        found.extend(r for r in repositories if keep(r))
        if len(found) >= wanted:
            return found[:wanted]
        cursor = _upstream_next(upstream.headers.get("Link"), repositories)
        if cursor is None:
            return found
    log.warning("catalog cut after %d registry pages", MAX_UPSTREAM_PAGES)
    return found
