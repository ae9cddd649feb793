"""One parser for /v2 paths, used by authorization and by the proxy alike.

The name is everything before the last route keyword, as distribution's router matches it;
a path whose name breaks the repository grammar (`..`, empty segments, upper case) or whose
reference is not a tag, digest or upload id is refused before anything is forwarded, so no
path normalisation downstream can turn it into another repository or another tag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from service.domain.errors import InvalidRequest
from service.domain.tags import tag_problem, valid_repository, valid_tag

DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
UPLOAD_ID_RE = re.compile(r"^[A-Za-z0-9_=-]{1,128}$")
PATTERNS = (
    ("manifest", re.compile(r"^(?P<name>.+)/manifests/(?P<ref>[^/]+)$")),
    ("tags", re.compile(r"^(?P<name>.+)/tags/list$")),
    ("upload", re.compile(r"^(?P<name>.+)/blobs/uploads/?$")),
    ("upload_session", re.compile(r"^(?P<name>.+)/blobs/uploads/(?P<ref>[^/]+)$")),
    ("blob", re.compile(r"^(?P<name>.+)/blobs/(?P<ref>[^/]+)$")),
    ("referrers", re.compile(r"^(?P<name>.+)/referrers/(?P<ref>[^/]+)$")),
)


class BadRoute(InvalidRequest):
    """A /v2 path that is not a registry route or names nothing valid: `registry_code` is the
    registry protocol's error code (`NAME_INVALID`, `MANIFEST_UNKNOWN`, ...)."""

    def __init__(self, registry_code: str, message: str, detail: object) -> None:
        super().__init__(message)
        self.registry_code = registry_code
        self.detail = detail


@dataclass(frozen=True)
class V2Route:
    """What a /v2 path addresses."""

    kind: str  # base, catalog, manifest, tags, upload, upload_session, blob, referrers
    name: str = ""
    ref: str = ""

    @property
    def path(self) -> str:
        """The canonical path (after `/v2/`) of this route, rebuilt from the parsed values:
        what is forwarded upstream, whatever spelling the client used."""
        return PATHS[self.kind].format(name=self.name, ref=self.ref)


PATHS = {
    "base": "",
    "catalog": "_catalog",
    "manifest": "{name}/manifests/{ref}",
    "tags": "{name}/tags/list",
    "upload": "{name}/blobs/uploads/",
    "upload_session": "{name}/blobs/uploads/{ref}",
    "blob": "{name}/blobs/{ref}",
    "referrers": "{name}/referrers/{ref}",
}
# Query parameters the registry reads, per route kind: the only ones forwarded (rebuilt from
# their parsed values). distribution reads `mount`, `from`, `digest` and `_state` with
# FormValue, so a form body could carry them too: bodies never reach it as a form.
QUERY_PARAMS = {
    "catalog": ("n", "last"),
    "tags": ("n", "last"),
    "upload": ("mount", "from", "digest"),
    "upload_session": ("_state", "digest"),
    "referrers": ("artifactType",),
}


def _check_ref(kind: str, ref: str, method: str) -> None:
    if kind in ("blob", "referrers") and not DIGEST_RE.match(ref):
        raise BadRoute("DIGEST_INVALID", "invalid digest", {"digest": ref})
    if kind == "upload_session" and not UPLOAD_ID_RE.match(ref):
        raise BadRoute("BLOB_UPLOAD_UNKNOWN", "blob upload unknown", {"upload": ref})
    if kind == "manifest" and ":" in ref and not DIGEST_RE.match(ref):
        raise BadRoute("DIGEST_INVALID", "invalid digest", {"reference": ref})
    if kind == "manifest" and ":" not in ref and not valid_tag(ref):
        if method in ("GET", "HEAD"):  # nothing can be stored under it: OCI wants a 404
            raise BadRoute("MANIFEST_UNKNOWN", "manifest unknown", {"reference": ref})
        shown = ref if len(ref) <= 40 else f"{ref[:40]}..."
        raise BadRoute("TAG_INVALID", f"invalid tag {shown!r}: {tag_problem(ref)}",
                       {"tag": ref})


def parse(path: str, method: str = "GET") -> V2Route:
    """The route of a /v2 path (the part after `/v2/`); BadRoute when it is not valid (a read
    of a manifest under an impossible tag is 404 MANIFEST_UNKNOWN, as for any absent one)."""
    if path == "":
        return V2Route("base")
    if path == "_catalog":
        return V2Route("catalog")
    for kind, pattern in PATTERNS:
        match = pattern.match(path)
        if match is None:
            continue
        name, ref = match.group("name"), match.groupdict().get("ref") or ""
        if not valid_repository(name):
            raise BadRoute("NAME_INVALID", "invalid repository name", {"name": name})
        _check_ref(kind, ref, method)
        return V2Route(kind, name, ref)
    raise BadRoute("NAME_UNKNOWN", "not a registry API route", {"path": path})
