"""Hostile input against the real gateway (issue 10, "Hostile input").

A private stack (real redis-server, docker-registry and the gateway under gunicorn) takes:
a hypothesis fuzz of the /v2 manifest PUT path, path traversal and injection on /v2 and
/api/v1, oversized requests, slowloris-style slow requests, and schemathesis in negative
and positive mode against every /api/v1 operation.

The invariants are: never a 5xx; a 4xx on /v2 is the registry's error envelope with
`Docker-Distribution-API-Version`, a 4xx on /api/v1 is the API envelope; a rejected request
writes nothing (the registry's manifest links on disk and a direct HEAD to the registry are
unchanged).

Bugs found here are pinned by `xfail(strict=True)` tests (one per bug). The manifest PUT
fuzz tolerates exactly those bugs' signatures (the known_* predicates in KNOWN_PUT_BUGS,
named after the bug ids of the xfail reasons), so it keeps catching anything new meanwhile;
when a bug is fixed, remove its xfail mark and its predicate.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import re
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import psutil
import pytest
import requests
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from service.http.gunicorn_worker import DEFAULT_READ_DEADLINE
from testkit import procs
from tests.faults.conftest import start_fault_stack
from tests.integration.conftest import Stack

# -- the registry's grammar (distribution's reference grammar; an oracle independent of the
# gateway's own implementation) ------------------------------------------------------------
NAME_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)"
                     r"[a-z0-9]+)*)*")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
MANIFEST_ROUTE = re.compile(r"^(?P<name>.+)/manifests/(?P<ref>[^/]+)$")  # the gateway's route

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
ACCEPT_ALL = ", ".join(MANIFEST_TYPES)

BASIC = "Basic " + base64.b64encode(f"fuzz:{procs.ADMIN_TOKEN}".encode()).decode()
BEARER = f"Bearer {procs.ADMIN_TOKEN}"
WEBHOOK_BEARER = f"Bearer {procs.WEBHOOK_TOKEN}"
API_LIMIT = 2 * 1024 * 1024

FUZZ_EXAMPLES = 1000
FUZZ_BUDGET_S = 45.0


def valid_name(name: str) -> bool:
    return len(name) <= 255 and NAME_RE.fullmatch(name) is not None


def valid_reference(ref: str) -> bool:
    return TAG_RE.fullmatch(ref) is not None or DIGEST_RE.fullmatch(ref) is not None


# -- raw HTTP (http.client does not normalise `..` or `%2F` the way requests/urllib3 do) -------
@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    elapsed: float = 0.0

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def has_header(self, name: str) -> bool:
        return self.header(name) is not None

    def json(self) -> Any:
        return json.loads(self.body)

    def short(self) -> str:
        return f"{self.status} {self.body[:300]!r}"


def call(port: int, method: str, target: str, body: bytes | None = None,
         headers: dict[str, str | bytes] | None = None, timeout: float = 15.0) -> Reply:
    """One request on a fresh connection, the target sent exactly as given."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        if body is not None or method in ("PUT", "POST", "PATCH"):
            conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body)
        resp = conn.getresponse()
        data = resp.read()
        return Reply(resp.status, resp.getheaders(), data, time.monotonic() - started)
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> tuple[bytes, float]:
    """Send raw bytes, read until the server closes or the response head (and its
    Content-Length body) is in; (response bytes, seconds)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # the server may answer and close mid-send
            sock.sendall(data)
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
            head, sep, rest = out.partition(b"\r\n\r\n")
            if sep:
                match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if match is None or len(rest) >= int(match.group(1)):
                    break
    return out, time.monotonic() - started


def parse_raw(data: bytes) -> tuple[int, dict[str, list[str]], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers.setdefault(key.strip().lower(), []).append(value.strip())
    return status, headers, body


# -- envelopes and the "nothing written" oracle ----------------------------------------------
def registry_envelope_problem(reply: Reply) -> str | None:
    """None when `reply` is the registry's error envelope, else what is wrong with it."""
    if reply.header("Docker-Distribution-API-Version") != "registry/2.0":
        return "no Docker-Distribution-API-Version: registry/2.0"
    try:
        doc = reply.json()
    except ValueError:
        return "body is not JSON"
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list) or not errors:
        return "no non-empty `errors` list"
    for err in errors:
        # `detail` is optional in the distribution spec (the registry omits it at times).
        if not (isinstance(err, dict) and isinstance(err.get("code"), str)
                and isinstance(err.get("message"), str)):
            return "an error without string `code` and `message`"
    return None


def api_envelope_problem(body: bytes) -> str | None:
    """None when `body` is the /api/v1 error envelope, else what is wrong with it."""
    try:
        doc = json.loads(body)
    except ValueError:
        return "body is not JSON"
    if not (isinstance(doc, dict) and isinstance(doc.get("code"), str)
            and isinstance(doc.get("message"), str)):
        return "no string `code` and `message`"
    return None


def manifest_links(stack: Stack) -> frozenset[tuple[str, str]]:
    """Every manifest link (tags and revisions of every repository) on the registry's disk."""
    root = stack.workdir / "registry" / "data" / "docker" / "registry" / "v2" / "repositories"
    out = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in ("_layers", "_uploads")]
        if "link" in files and "/_manifests/" in folder:
            path = Path(folder, "link")
            with contextlib.suppress(OSError):
                out.add((path.relative_to(root).as_posix(), path.read_text()))
    return frozenset(out)


def registry_digest(stack: Stack, name: str, ref: str) -> str | None:
    """HEAD straight to the registry: the digest `name:ref` resolves to, or None."""
    target = f"/v2/{quote(name, safe='/')}/manifests/{quote(ref, safe=':')}"
    reply = call(stack.registry.port, "HEAD", target, headers={"Accept": ACCEPT_ALL})
    return reply.header("Docker-Content-Digest") if reply.status == 200 else None


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def json_depth(data: bytes) -> int:
    """Maximum bracket nesting of a JSON-ish byte string (strings skipped)."""
    depth = best = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            best = max(best, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return best


def parsed_object(data: bytes) -> dict | None:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


# -- the stack --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One private stack for this module (rate limit off: the fuzzers send thousands)."""
    stack = start_fault_stack(tmp_path_factory.mktemp("hostile"), worker=False,
                              TAGWARDEN_RATE_LIMIT="off")
    yield stack
    stack.stop()


def assert_healthy(stack: Stack) -> None:
    reply = call(stack.gateway.port, "GET", "/healthz", timeout=5)
    assert reply.status == 200, reply.short()


def v2(stack: Stack, method: str, target: str, body: bytes | None = None,
       media_type: str | bytes | None = None, auth: str = BASIC,
       extra: dict[str, str | bytes] | None = None) -> Reply:
    headers: dict[str, str | bytes] = {"Authorization": auth}
    if media_type is not None:
        headers["Content-Type"] = media_type
    headers.update(extra or {})
    return call(stack.gateway.port, method, target, body, headers)


def api(stack: Stack, method: str, target: str, doc: Any = None, auth: str = BEARER,
        body: bytes | None = None) -> Reply:
    headers: dict[str, str | bytes] = {"Authorization": auth}
    if doc is not None:
        body = json.dumps(doc).encode()
    if body is not None:
        headers["Content-Type"] = "application/json"
    return call(stack.gateway.port, method, target, body, headers)


def empty_index(note: str) -> bytes:
    """An OCI index with no children: the registry accepts it without any blob."""
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [],
                       "annotations": {"note": note}}).encode()


def push_index(stack: Stack, name: str, tag: str, note: str) -> str:
    body = empty_index(note)
    reply = v2(stack, "PUT", f"/v2/{name}/manifests/{tag}", body, OCI_INDEX)
    assert reply.status == 201, reply.short()
    return sha256(body)


def scoped_token(stack: Stack, name: str, repositories: list[str]) -> str:
    reply = api(stack, "POST", "/api/v1/tokens",
                {"name": name, "role": "ci", "repositories": repositories})
    assert reply.status == 201, reply.short()
    secret = reply.json()["token"]
    return "Basic " + base64.b64encode(f"ci:{secret}".encode()).decode()


# =============================================================================================
# Known bugs. Each predicate recognises one bug's signature in a fuzz outcome; each bug has
# a strict xfail test below. Remove both when the bug is fixed.
# =============================================================================================
@dataclass
class PutRequest:
    """One fuzzed manifest PUT: what the client means, and how the path is spelled."""

    name: str
    tag: str
    media_type: str | None
    body: bytes
    encoding: str = "keep"  # keep: `/` and `%xx` as given; strict: everything escaped

    @property
    def ref(self) -> str:
        return sha256(self.body) if self.tag == "@digest" else self.tag

    @property
    def wire(self) -> tuple[str, str]:
        """The name and reference as spelled on the request line."""
        safe = "/%:@!$&'()*+,;=~-._" if self.encoding == "keep" else ""
        return quote(self.name, safe=safe), quote(self.ref, safe=safe)

    @property
    def target(self) -> str:
        name, ref = self.wire
        return f"/v2/{name}/manifests/{ref}"

    @property
    def meant(self) -> tuple[str, str]:
        """What the client means: each path component percent-decoded on its own (so a
        `%2F` in the name is a slash the client asked for, a `%2F` in the tag is not a
        path separator)."""
        name, ref = self.wire
        return unquote(name), unquote(ref)

    def gateway_view(self) -> tuple[str, str] | None:
        """(name, reference) as the gateway's route sees the path, None when the PUT does
        not reach the governed manifest route at all."""
        rest = unquote(self.target)[len("/v2/"):]
        match = MANIFEST_ROUTE.match(rest)
        return (match.group("name"), match.group("ref")) if match else None


@dataclass
class Outcome:
    request: PutRequest
    reply: Reply
    problems: list[str] = field(default_factory=list)

    def describe(self) -> str:
        req = self.request
        return (f"PUT {req.target[:200]} Content-Type={req.media_type!r} "
                f"body={req.body[:160]!r}{'...' if len(req.body) > 160 else ''} "
                f"-> {self.reply.short()} :: {'; '.join(self.problems)}")


# Signatures of known, not yet fixed bugs the fuzz tolerates (none: BUG-1..3 are fixed).
KNOWN_PUT_BUGS: dict[str, Callable[[Outcome], bool]] = {}


# =============================================================================================
# 1. Fuzz of the /v2 manifest PUT path
# =============================================================================================
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
hex_digests = st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True)
odd_media_types = [
    "application/json", "text/plain", "", "*/*", "application/octet-stream",
    OCI_MANIFEST + "; charset=utf-8", OCI_MANIFEST.upper(), f"{OCI_MANIFEST}, {OCI_INDEX}",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.oci.artifact.manifest.v1+json", "application/vnd.oci.image.config.v1+json",
]
media_types = st.one_of(
    st.sampled_from(MANIFEST_TYPES), st.sampled_from(MANIFEST_TYPES),
    st.sampled_from(odd_media_types),
    st.text(st.characters(codec="latin-1", exclude_characters="\r\n\x00\x7f",
                          exclude_categories=["Cc"]), max_size=60),
    st.none(),
)
descriptors = st.fixed_dictionaries(
    {"mediaType": st.one_of(st.sampled_from(MANIFEST_TYPES + (
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.oci.image.layer.v1.tar+gzip")), st.text(max_size=20)),
     "digest": st.one_of(hex_digests, st.text(max_size=70)),
     "size": st.one_of(st.integers(min_value=-2, max_value=2**64), st.text(max_size=4))},
    optional={"annotations": st.dictionaries(st.text(max_size=10), json_scalars, max_size=3),
              "platform": st.dictionaries(st.text(max_size=10), json_values, max_size=3),
              "urls": st.lists(st.text(max_size=20), max_size=2)},
)
schema_versions = st.one_of(st.just(2), st.just(2), st.integers(-3, 4),
                            st.sampled_from([None, "2", 2.0, True, 2**70, [2]]))


@st.composite
def manifests(draw: st.DrawFn, media_type: str | None) -> bytes:
    """A manifest-shaped JSON object with random fields, encoded in assorted ways."""
    doc: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        doc["schemaVersion"] = draw(schema_versions)
    declared = draw(st.sampled_from(["same", "same", "none", "other"]))
    if declared == "same" and media_type is not None:
        doc["mediaType"] = media_type
    elif declared == "other":
        doc["mediaType"] = draw(st.one_of(st.sampled_from(MANIFEST_TYPES), st.text(max_size=30)))
    for key, values in (("config", st.one_of(descriptors, json_values)),
                        ("layers", st.one_of(st.lists(descriptors, max_size=3), json_values)),
                        ("manifests", st.one_of(st.lists(descriptors, max_size=3),
                                                json_values)),
                        ("subject", st.one_of(descriptors, json_values)),
                        ("annotations", st.one_of(st.dictionaries(st.text(max_size=10),
                                                                  st.text(max_size=10)),
                                                  json_values)),
                        ("artifactType", st.text(max_size=30))):
        if draw(st.booleans()):
            doc[key] = draw(values)
    if draw(st.integers(0, 4)) == 0:
        doc.update(draw(st.dictionaries(st.text(max_size=12), json_values, max_size=3)))
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    mode = draw(st.sampled_from(["utf-8"] * 6 + ["utf-16", "utf-32", "latin-1", "bom",
                                                 "bad-byte"]))
    if mode == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    if mode == "bad-byte":
        raw = text.encode()
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\x00", b"\xed\xa0\x80"])) \
            + raw[at:]
    return text.encode(mode, errors="replace")


deep_bodies = st.builds(
    lambda depth, opener, close: opener * depth + (b"1" + (b"]" if opener == b"[" else b"}")
                                                   * depth if close else b""),
    st.one_of(st.integers(1, 2000), st.integers(2000, 100_000)),
    st.sampled_from([b"[", b'{"a":']), st.booleans(),
)

component = st.from_regex(r"[a-z0-9]{1,6}(?:[._-][a-z0-9]{1,6}){0,2}", fullmatch=True)
good_names = st.lists(component, min_size=1, max_size=3).map(lambda c: "fz/" + "/".join(c))
nasty_names = st.sampled_from([
    "FZ/App", "fz/APP", "fz/../etc", "fz/app/..", "..", ".", "fz//app", "fz/app/", "/fz/app",
    "fz%2Fapp", "fz%2F..%2Fother", "fz/%2e%2e/other", "fz/./app", "fz/" + "a" * 300,
    "fz/" + "/".join(["abcdefgh"] * 30), "fz/ü", "fz/app%00", "fz/app\x00", "fz/app%0d%0ax",
    "fz/app;rm -rf", "fz/$(id)", "fz/app?x=1", "fz/app#frag", "fz/-app", "fz/app-", "fz/a__b",
    "fz/a___b", "fz/a..b", "fz/app/manifests/v1", "fz/app/blobs/uploads", "", " ", "fz/app ",
])
names = st.one_of(good_names, good_names, good_names, nasty_names, st.text(max_size=40),
                  st.builds(lambda a, b: a + b, good_names, nasty_names))
good_tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,40}", fullmatch=True)
nasty_tags = st.sampled_from([
    "..", ".", "%2e%2e", "%2E%2E", "-lead", ".lead", "a" * 128, "a" * 129, "ü", "v1+build",
    "x/y", "x%2Fy", "x/../v1", "..%2Fv1", "%00", "v1%00", "v1%0d%0aInjected:%201", "latest",
    "develop", "production", " ", "sha256:abc", "sha256:" + "g" * 64, "SHA256:" + "a" * 64,
    "sha512:" + "a" * 128, "@digest", "@digest", "';DROP TABLE tags;--", "$(id)", "v1/",
])
tags = st.one_of(good_tags, good_tags, good_tags, nasty_tags, hex_digests,
                 st.text(max_size=140))


@st.composite
def put_requests(draw: st.DrawFn) -> PutRequest:
    if draw(st.integers(0, 3)) == 0:
        # A shape the registry stores without any blob (an empty index): these reach the
        # policy and, when it allows, the registry - the acknowledged-write path.
        media_type = draw(st.sampled_from([OCI_INDEX, DOCKER_LIST]))
        body = json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": [],
                           "annotations": draw(st.dictionaries(st.text(max_size=8),
                                                               st.text(max_size=16),
                                                               max_size=3))}).encode()
    else:
        media_type = draw(media_types)
        body = draw(st.one_of(
            manifests(media_type), manifests(media_type), manifests(media_type),
            st.binary(max_size=512), deep_bodies, st.just(b""),
            st.builds(lambda v: json.dumps(v).encode(), json_values),
        ))
    return PutRequest(draw(names), draw(tags), media_type, body,
                      draw(st.sampled_from(["keep", "keep", "strict"])))


def check_put(stack: Stack, req: PutRequest) -> Outcome:
    """Send one fuzzed PUT and judge it against every invariant."""
    name, ref = req.meant
    links_before = manifest_links(stack)
    head_before = registry_digest(stack, name, ref)
    reply = v2(stack, "PUT", req.target, req.body, req.media_type)
    outcome = Outcome(req, reply)
    problems = outcome.problems
    if reply.status >= 500:
        problems.append("5xx")
    if 400 <= reply.status < 500 and (bad := registry_envelope_problem(reply)):
        problems.append(f"4xx not in the registry envelope: {bad}")
    if 200 <= reply.status < 300:
        if not (valid_name(name) and valid_reference(ref)):
            problems.append("accepted a name or reference outside the registry grammar")
        elif req.gateway_view() != (name, ref):
            problems.append("accepted, but the gateway parsed another name/reference")
        else:
            stored = registry_digest(stack, name, ref)
            if stored != sha256(req.body):
                problems.append(f"acknowledged, but the registry has {stored}")
    else:
        if manifest_links(stack) != links_before:
            problems.append("rejected, but the registry's manifest links changed")
        if registry_digest(stack, name, ref) != head_before:
            problems.append("rejected, but a direct HEAD sees a changed tag")
    return outcome


FUZZ_EXAMPLES_EXPLICIT = [
    PutRequest("fz/deep", "v1", OCI_MANIFEST, b"[" * 100_000),
    PutRequest("fz/deep", "v1", OCI_MANIFEST, b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
    PutRequest("fz/sv", "v1", OCI_INDEX, b'{"manifests": []}'),
    PutRequest("fz/sv", "v1", OCI_INDEX, b'{"schemaVersion": 3, "manifests": []}'),
    PutRequest("fz/empty", "v1", OCI_INDEX, b'{"schemaVersion": 2, "manifests": []}'),
    PutRequest("fz/nonutf8", "v1", OCI_INDEX, b'{"schemaVersion": 2, "x": "\xff"}'),
    PutRequest("fz/app", "..", OCI_INDEX, b"{}"),
    PutRequest("fz/app", "%2e%2e", OCI_INDEX, b"{}"),
    PutRequest("fz/../etc", "v1", OCI_INDEX, b"{}"),
    PutRequest("fz/" + "a" * 300, "v1", OCI_INDEX, b"{}"),
    PutRequest("fz%2F..%2Fother", "v1", OCI_INDEX, b"{}"),
    PutRequest("fz/app", "a" * 129, OCI_INDEX, b"{}"),
]


@pytest.mark.timeout(150)
def test_manifest_put_fuzz(hostile: Stack) -> None:
    """Random manifests, media types, tags and names: zero 5xx, the registry envelope on
    every 4xx, and no write on a rejected PUT (except the pinned known bugs)."""
    outcomes: list[Outcome] = []
    started = time.monotonic()
    skipped = 0

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much,
                                     HealthCheck.large_base_example])
    @given(req=put_requests())
    def fuzz(req: PutRequest) -> None:
        nonlocal skipped
        if time.monotonic() - started > FUZZ_BUDGET_S:
            skipped += 1  # stay inside the time budget on a slow machine
            return
        outcomes.append(check_put(hostile, req))

    for explicit in reversed(FUZZ_EXAMPLES_EXPLICIT):
        fuzz = example(req=explicit)(fuzz)
    fuzz()

    statuses = Counter(o.reply.status for o in outcomes)
    known: Counter[str] = Counter()
    unknown: list[Outcome] = []
    for outcome in outcomes:
        if not outcome.problems:
            continue
        bug = next((name for name, match in KNOWN_PUT_BUGS.items() if match(outcome)), None)
        if bug is None:
            unknown.append(outcome)
        else:
            known[bug] += 1
    print(f"\n[hostile] manifest PUT fuzz (hypothesis, derandomized): sent={len(outcomes)} "
          f"skipped={skipped} in {time.monotonic() - started:.1f}s statuses={dict(statuses)} "
          f"accepted={sum(n for s, n in statuses.items() if s < 300)} "
          f"5xx={sum(n for s, n in statuses.items() if s >= 500)} known-bug hits={dict(known)} "
          f"unexplained={len(unknown)}")
    assert len(outcomes) >= 50, "the fuzz ran too few examples to mean anything"
    assert not unknown, "violations not explained by a known bug:\n" + "\n".join(
        o.describe() for o in unknown[:25])
    assert_healthy(hostile)


MIB = 1024 * 1024
HOSTILE_MANIFESTS = 48


def hostile_manifest(shape: str, size: int = 4 * MIB) -> bytes:
    """A manifest of exactly `size` bytes made of tiny JSON objects (issue 14 item 9)."""
    head = ('{"schemaVersion":2,"mediaType":"' + OCI_MANIFEST + '",').encode()
    if shape == "layers":
        fill, open_, close = b"{},", b'"layers":[', b"{}]}"
    else:  # annotations full of tiny objects (distinct keys: a dict keeps only one per key)
        fill, open_, close = b"", b'"annotations":{', b'"z":{}}}'
    room = size - len(head) - len(open_) - len(close)
    if fill:
        body = head + open_ + fill * (room // len(fill)) + close
    else:
        items, n = [], 0
        while room >= len(item := b'"%x":{},' % n):
            items.append(item)
            room -= len(item)
            n += 1
        body = head + open_ + b"".join(items) + close
    return body + b" " * (size - len(body))


@pytest.mark.timeout(180)
def test_hostile_manifests_do_not_amplify_memory(fault_stack: Stack) -> None:
    """48 concurrent 4 MiB manifests of `{}` objects: refused as MANIFEST_INVALID naming the
    limit, and the gateway's processes (summed) grow by less than 256 MiB at the peak."""
    bodies = {shape: hostile_manifest(shape) for shape in ("layers", "annotations")}
    assert all(len(b) == 4 * MIB and parsed_object(b) for b in bodies.values())
    for _ in range(8):  # warm up both workers: imports, pools, threads
        assert v2(fault_stack, "GET", "/v2/").status == 200
        reply = v2(fault_stack, "PUT", "/v2/dos/mem/manifests/warm",
                   bodies["layers"][:4096].rsplit(b",", 1)[0] + b"]}", OCI_MANIFEST)
        assert reply.status == 400, reply.short()  # a real descriptor needs a digest
    baseline = fault_stack.gateway.rss()
    replies: list[Reply | BaseException] = []

    def send(i: int) -> None:
        body = bodies["layers" if i % 2 else "annotations"]
        try:
            replies.append(v2(fault_stack, "PUT", f"/v2/dos/mem/manifests/h{i}", body,
                              OCI_MANIFEST))
        except BaseException as exc:  # noqa: BLE001 - reported below
            replies.append(exc)

    senders = [threading.Thread(target=send, args=(i,)) for i in range(HOSTILE_MANIFESTS)]
    with procs.PeakRss(fault_stack.gateway.pid) as peak:
        for t in senders:
            t.start()
        for t in senders:
            t.join()
    growth = peak.peak - baseline
    statuses = Counter(r.status if isinstance(r, Reply) else type(r).__name__ for r in replies)
    print(f"\n[hostile] {HOSTILE_MANIFESTS} concurrent 4 MiB hostile manifests: gateway RSS "
          f"(all processes) {baseline / MIB:.0f} MiB -> peak {peak.peak / MIB:.0f} MiB, growth "
          f"{growth / MIB:.1f} MiB ({peak.samples} samples); statuses {dict(statuses)}")
    for reply in replies:
        assert isinstance(reply, Reply), reply
        assert reply.status == 400, reply.short()
        assert registry_envelope_problem(reply) is None, reply.short()
        detail = reply.json()["errors"][0]
        assert detail["code"] == "MANIFEST_INVALID", reply.short()
        assert "the limit is 16384" in str(detail["detail"]), reply.short()
    assert growth < 256 * MIB, f"gateway RSS grew by {growth / MIB:.1f} MiB"
    assert_healthy(fault_stack)


# --- the bugs the fuzz found, one strict xfail each -------------------------------------------
def test_deeply_nested_manifest_is_a_400(hostile: Stack) -> None:
    for body in (b"[" * 100_000, b'{"a":' * 3000 + b"1" + b"}" * 3000):
        reply = v2(hostile, "PUT", "/v2/fz/deep/manifests/v1", body, OCI_MANIFEST)
        assert reply.status == 400, reply.short()
        assert registry_envelope_problem(reply) is None, reply.short()


def test_manifest_schema_version_is_validated(hostile: Stack) -> None:
    links = manifest_links(hostile)
    for version in ("", '"schemaVersion": null,', '"schemaVersion": 1,', '"schemaVersion": 3,'):
        body = ("{" + version + '"manifests": []}').encode()
        reply = v2(hostile, "PUT", "/v2/fz/schema/manifests/v1", body, OCI_INDEX)
        assert reply.status == 400, (version, reply.short())
        assert registry_envelope_problem(reply) is None, reply.short()
    assert manifest_links(hostile) == links


def test_dot_segments_cannot_bypass_push_governance(hostile: Stack) -> None:
    name = "hostile/gov-push"
    original = push_index(hostile, name, "v1.0.0", "original")
    reserved = v2(hostile, "PUT", f"/v2/{name}/manifests/production", empty_index("x"), OCI_INDEX)
    assert reserved.status == 403, reserved.short()  # the direct path is governed
    immutable = v2(hostile, "PUT", f"/v2/{name}/manifests/v1.0.0", empty_index("y"), OCI_INDEX)
    assert immutable.status == 403, immutable.short()
    for target, tag in ((f"/v2/{name}/manifests/x/../production", "production"),
                        (f"/v2/{name}/manifests/.%2Fproduction", "production"),
                        (f"/v2/{name}/manifests/x/../v1.0.0", "v1.0.0"),
                        (f"/v2/{name}/manifests/x%2F..%2Fv1.0.0", "v1.0.0")):
        before = registry_digest(hostile, name, tag)
        reply = v2(hostile, "PUT", target, empty_index(f"bypass {target}"), OCI_INDEX)
        assert 400 <= reply.status < 500, (target, reply.short())
        assert registry_envelope_problem(reply) is None, (target, reply.short())
        assert registry_digest(hostile, name, tag) == before, f"{target} wrote {name}:{tag}"
    assert registry_digest(hostile, name, "v1.0.0") == original


def test_dot_segments_cannot_bypass_delete_governance(hostile: Stack) -> None:
    name = "hostile/gov-delete"
    digest = push_index(hostile, name, "v1.0.0", "in use")
    promoted = api(hostile, "POST", "/api/v1/promotions",
                   {"repository": name, "environment": "develop", "tag": "v1.0.0"})
    assert promoted.status == 201, promoted.short()
    direct = v2(hostile, "DELETE", f"/v2/{name}/manifests/{digest}")
    assert direct.status == 403, direct.short()  # the direct path is governed
    for target in (f"/v2/{name}/manifests/x/../{digest}", f"/v2/{name}/manifests/.%2F{digest}"):
        reply = v2(hostile, "DELETE", target)
        assert 400 <= reply.status < 500, (target, reply.short())
        assert registry_digest(hostile, name, digest) == digest, f"{target} deleted it"


# =============================================================================================
# 2. Path traversal and injection
# =============================================================================================
HOSTILE_NAMES = [
    "../../etc/passwd", "team/app/../../other", "a%2F..%2Fb", "team/%2e%2e/other", "%00",
    "team/app%00", "';DROP TABLE tags;--", "$(id)", "team/`id`", "team/app%0d%0aInjected:%201",
    "..", ".", "team//app", "team/app/", "TEAM/APP", "a" * 300,
]
HOSTILE_TAGS = ["..", "%2e%2e", "%00", "';DROP", "$(id)", "v1%0d%0aInjected:%201",
                "v1%0aInjected:%201", "a" * 129, "-v1", "%2e"]


def test_traversal_and_injection_in_v2_names_and_tags(hostile: Stack) -> None:
    """Hostile names and tags on the governed manifest PUT and DELETE: a 4xx in the
    registry envelope, never 5xx, nothing written, no injected response header. (Reads with
    dot segments are BUG-6 below.)"""
    links = manifest_links(hostile)
    body = empty_index("traversal")
    cases = [(n, "v1") for n in HOSTILE_NAMES] + [("team/app", t) for t in HOSTILE_TAGS]
    seen: Counter[int] = Counter()
    for name, tag in cases:
        target = f"/v2/{quote(name, safe='/%')}/manifests/{quote(tag, safe='%')}"
        for method in ("PUT", "DELETE"):
            reply = v2(hostile, method, target, body if method == "PUT" else None,
                       OCI_INDEX if method == "PUT" else None)
            seen[reply.status] += 1
            assert reply.status < 500, (method, target, reply.short())
            assert 400 <= reply.status < 500, (method, target, reply.short())
            assert registry_envelope_problem(reply) is None, (method, target, reply.short())
            assert not reply.has_header("Injected"), (method, target, reply.headers)
    assert manifest_links(hostile) == links, "a hostile name or tag wrote to the registry"
    print(f"\n[hostile] /v2 traversal+injection: sent={2 * len(cases)} statuses={dict(seen)}")


def test_crlf_in_request_headers_does_not_inject_response_headers(hostile: Stack) -> None:
    """CRLF in header values: gunicorn splits or rejects them; no `Injected` header ever
    comes back and nothing answers 5xx."""
    port = hostile.gateway.port
    start = (f"POST /v2/team/app/blobs/uploads/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
             f"Authorization: {BASIC}\r\nContent-Length: 0\r\n").encode()
    for header in (b"X-Forwarded-Host: evil\r\nInjected: 1\r\n",
                   b"X-Forwarded-Host: evil\rInjected: 1\r\n",
                   b"X-Forwarded-Host: evil\nInjected: 1\r\n",
                   b"X-Forwarded-Host: evil\r\n Injected: 1\r\n",
                   b"X-Request-ID: abc\r\nInjected: 1\r\n",
                   b"X-Request-ID: abc%0d%0aInjected:%201\r\n"):
        data, _ = raw_exchange(port, start + header + b"\r\n")
        status, headers, _ = parse_raw(data)
        assert status < 500, (header, data[:300])
        assert "injected" not in headers, (header, data[:500])
        rid = headers.get("x-request-id", [""])[0]
        assert "\r" not in rid and "\n" not in rid, rid


def test_client_forwarded_host_does_not_steer_location(hostile: Stack) -> None:
    for extra in ({"X-Forwarded-Host": "evil.example"}, {"X-Forwarded-Proto": "javascript"}):
        reply = v2(hostile, "POST", "/v2/fz/loc/blobs/uploads/", b"", extra=extra)
        assert reply.status == 202, reply.short()
        location = reply.header("Location") or ""
        assert not location.startswith(("http://evil.example", "javascript:")), location


def test_malformed_forwarded_host_is_not_a_500(hostile: Stack) -> None:
    for host in ("a:b", "evil%0d%0aInjected:%201", "[::1"):
        reply = v2(hostile, "POST", "/v2/fz/loc/blobs/uploads/", b"",
                   extra={"X-Forwarded-Host": host})
        assert reply.status < 500, (host, reply.short())


def test_dot_segments_cannot_escape_token_scope(hostile: Stack) -> None:
    push_index(hostile, "victim/app", "v1", "victim")
    push_index(hostile, "team/x", "v1", "team")
    auth = scoped_token(hostile, "scoped-team", ["team/*"])
    direct = v2(hostile, "GET", "/v2/victim/app/manifests/v1", auth=auth,
                extra={"Accept": ACCEPT_ALL})
    assert direct.status == 403, direct.short()  # the scope holds on the plain path
    for method, target in (("GET", "/v2/team/x/../../victim/app/manifests/v1"),
                           ("GET", "/v2/team/x%2F..%2F..%2Fvictim%2Fapp/manifests/v1"),
                           ("GET", "/v2/team/x/../../victim/app/tags/list"),
                           ("POST", "/v2/team/x/../../victim/app/blobs/uploads/"),
                           ("GET", "/v2/team/x/../../../etc/passwd/manifests/v1")):
        reply = v2(hostile, method, target, b"" if method == "POST" else None, auth=auth,
                   extra={"Accept": ACCEPT_ALL})
        assert reply.status in (400, 403), (method, target, reply.short())
        assert registry_envelope_problem(reply) is None, (method, target, reply.short())


def test_repository_is_authorised_as_the_registry_parses_it(hostile: Stack) -> None:
    auth = scoped_token(hostile, "scoped-exact", ["team/app"])
    links = manifest_links(hostile)
    reply = v2(hostile, "PUT", "/v2/team/app/manifests/x/manifests/v1", empty_index("m"),
               OCI_INDEX, auth=auth)
    assert reply.status == 403, reply.short()
    assert manifest_links(hostile) == links


def test_traversal_and_injection_in_api_bodies_queries_and_paths(hostile: Stack) -> None:
    """/api/v1 with hostile repositories in JSON bodies, query strings and path parameters:
    a 4xx in the API envelope (or an empty 200 for list filters), never 5xx, nothing
    written."""
    def counts() -> tuple[int, int, int, int]:
        lists = [api(hostile, "GET", f"/api/v1/{what}?limit=500")
                 for what in ("promotions", "scans", "policies", "subscriptions")]
        assert all(r.status == 200 for r in lists), [r.short() for r in lists]
        return tuple(len(r.json()["items"]) for r in lists)  # type: ignore[return-value]

    before, links = counts(), manifest_links(hostile)
    seen: Counter[int] = Counter()

    def expect_4xx(reply: Reply, what: str) -> None:
        seen[reply.status] += 1
        assert 400 <= reply.status < 500, (what, reply.short())
        assert api_envelope_problem(reply.body) is None, (what, reply.short())
        assert not reply.has_header("Injected"), (what, reply.headers)

    names = [unquote(n) for n in HOSTILE_NAMES] + ["team/app\r\nInjected: 1"]
    for name in names:
        expect_4xx(api(hostile, "POST", "/api/v1/promotions",
                       {"repository": name, "environment": "develop", "tag": "v1"}), name)
        expect_4xx(api(hostile, "POST", "/api/v1/rollbacks",
                       {"repository": name, "environment": "develop"}), name)
        expect_4xx(api(hostile, "POST", "/api/v1/scans",
                       {"repository": name, "reference": "v1"}), name)
        expect_4xx(api(hostile, "POST", "/api/v1/policies/evaluate",
                       {"action": "push", "repository": name, "tag": "v1"}), name)
        expect_4xx(api(hostile, "PUT", f"/api/v1/policies/{quote(name, safe='')}",
                       {"name": name, "repositories": [name]}), name)
        for path in ("policies", "promotions", "scans", "tokens", "subscriptions"):
            reply = api(hostile, "GET", f"/api/v1/{path}/{quote(name, safe='')}")
            expect_4xx(reply, f"GET {path}/{name!r}")
        for path in ("promotions", "events", "scans", "audit", "environments"):
            reply = api(hostile, "GET", f"/api/v1/{path}?repository={quote(name, safe='')}")
            seen[reply.status] += 1
            assert reply.status < 500, (path, name, reply.short())
            assert not reply.has_header("Injected")
            if reply.status >= 400:
                assert api_envelope_problem(reply.body) is None, reply.short()
            elif path == "environments":
                assert all(e["digest"] is None for e in reply.json()["environments"])
            elif path == "audit":  # our own rejected calls are audited, never as a success
                assert all(e["outcome"] != "success" for e in reply.json()["items"])
            else:
                assert reply.json()["items"] == [], (path, name, reply.short())
    for field_name, value in (("tag", "../../x"), ("tag", "v1\r\nInjected: 1"),
                              ("environment", "../../etc"), ("environment", "$(id)"),
                              ("digest", "sha256:../../etc/passwd")):
        doc = {"repository": "hostile/api", "environment": "develop", "tag": "v1",
               field_name: value}
        expect_4xx(api(hostile, "POST", "/api/v1/promotions", doc), f"{field_name}={value!r}")
    assert counts() == before, "a hostile API request wrote something"
    assert manifest_links(hostile) == links
    print(f"\n[hostile] /api/v1 traversal+injection: statuses={dict(seen)}")


# =============================================================================================
# 3. Oversized input
# =============================================================================================
def test_oversized_request_heads_are_refused_quickly(hostile: Stack) -> None:
    port = hostile.gateway.port
    cases = {
        "64 KiB header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536
                         + b"\r\n\r\n",
        "16 KiB request line": b"GET /healthz?" + b"a" * 16384 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "500 headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                       + b"".join(b"X-H%d: 1\r\n" % i for i in range(500)) + b"\r\n",
        "64 KiB Authorization": b"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic "
                                + b"A" * 65536 + b"\r\n\r\n",
    }
    for what, data in cases.items():
        # The head is complete: a refusal (not the read deadline) is what answers it.
        response, _ = raw_exchange(port, data)
        status, _, _ = parse_raw(response)
        assert status in (400, 414, 431), (what, response[:200])
    assert_healthy(hostile)


def test_api_body_over_the_limit_is_413_with_the_api_envelope(hostile: Stack) -> None:
    port = hostile.gateway.port
    # Declared too large: answered from the headers, before the body is read.
    head = (f"PUT /api/v1/policies/big HTTP/1.1\r\nHost: x\r\nAuthorization: {BEARER}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {3 * 1024 * 1024}\r\n")
    # The body never arrives: an answer before the gateway's own read deadline can only come
    # from the headers (a client timeout of half that deadline raises otherwise).
    deadline = float(hostile.env.get("TAGWARDEN_REQUEST_READ_TIMEOUT", DEFAULT_READ_DEADLINE))
    status, body = procs.raw_request(port, head, body_prefix=b'{"name": "big"',
                                     timeout=deadline / 2)
    assert status == 413, body[:300]
    assert api_envelope_problem(body) is None, body[:300]
    # Sent whole.
    doc = b'{"name": "big", "repositories": ["big/*"], "pad": "' + b"a" * (API_LIMIT + 1) + b'"}'
    reply = api(hostile, "PUT", "/api/v1/policies/big", body=doc)
    assert reply.status == 413, reply.short()
    assert api_envelope_problem(reply.body) is None, reply.short()
    assert api(hostile, "GET", "/api/v1/policies/big").status == 404
    # A manifest declared above 4 MiB: the registry envelope, from the headers alone.
    head = (f"PUT /v2/fz/big/manifests/v1 HTTP/1.1\r\nHost: x\r\nAuthorization: {BASIC}\r\n"
            f"Content-Type: {OCI_INDEX}\r\nContent-Length: {5 * 1024 * 1024}\r\n")
    status, body = procs.raw_request(port, head, body_prefix=b"{")
    assert status == 400 and b"MANIFEST_INVALID" in body, body[:300]


def test_chunked_api_body_over_the_limit_is_413(hostile: Stack) -> None:
    def chunks() -> Iterator[bytes]:
        yield json.dumps({"name": "chunky", "repositories": ["chunky/*"]}).encode()
        for _ in range(48):
            yield b" " * 65536

    port = hostile.gateway.port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"PUT /api/v1/policies/chunky HTTP/1.1\r\nHost: x\r\nAuthorization: "
                     f"{BEARER}\r\nContent-Type: application/json\r\n"
                     f"Transfer-Encoding: chunked\r\n\r\n".encode())
        with contextlib.suppress(OSError):
            for chunk in chunks():
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        data = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in data:
                got = sock.recv(65536)
                if not got:
                    break
                data += got
    status, _, _ = parse_raw(data)
    stored = api(hostile, "GET", "/api/v1/policies/chunky").status
    assert (status, stored) == (413, 404), data[:300]


def test_deeply_nested_api_json_is_a_4xx(hostile: Stack) -> None:
    for target, auth in (("/api/v1/policies/x", BEARER), ("/api/v1/policies/evaluate", BEARER),
                         ("/api/v1/webhooks/registry", WEBHOOK_BEARER)):
        for body in (b"[" * 100_000, b"[" * 3000):
            method = "PUT" if target.endswith("/x") else "POST"
            reply = api(hostile, method, target, body=body, auth=auth)
            assert 400 <= reply.status < 500, (target, len(body), reply.short())
            assert api_envelope_problem(reply.body) is None, reply.short()


# =============================================================================================
# 4. Slowloris
# =============================================================================================
SLOW_HEAD = (b"GET /healthz HTTP/1.1\r\nHost: x\r\nUser-Agent: slowloris\r\nX-Pad: "
             + b"a" * 200 + b"\r\n\r\n")
SLOW_BODY_HEAD = (f"PUT /api/v1/policies/slow HTTP/1.1\r\nHost: x\r\nAuthorization: {BEARER}\r\n"
                  "Content-Type: application/json\r\nContent-Length: 4096\r\n\r\n").encode()


@dataclass
class SlowClient:
    """A socket that sends `prefix` at once and then `drip` one byte at a time."""

    sock: socket.socket
    drip: bytes
    sent: int = 0
    cut_at: float | None = None
    answer: bytes = b""

    def step(self, now: float) -> None:
        if self.cut_at is not None:
            return
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if readable:
                data = self.sock.recv(4096)
                self.answer += data
                if not data or b"\r\n\r\n" in self.answer:
                    self.cut_at = now
                    return
            if self.sent < len(self.drip):
                self.sock.send(self.drip[self.sent:self.sent + 1])
                self.sent += 1
        except OSError:
            self.cut_at = now


def open_slow_client(port: int, index: int) -> SlowClient:
    """Alternately a client dripping its request head and one dripping an /api/v1 body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        if index % 2 == 0:
            sock.sendall(SLOW_HEAD[:1])  # a first byte, so that a thread takes it
            return SlowClient(sock, SLOW_HEAD[1:])
        sock.sendall(SLOW_BODY_HEAD + b"{")
        return SlowClient(sock, b" " * 4094 + b"}")
    except OSError:
        sock.close()
        raise


@contextlib.contextmanager
def slow_clients(port: int, count: int) -> Iterator[list[SlowClient]]:
    """`count` slow clients; every socket is closed on the way out."""
    clients: list[SlowClient] = []
    try:
        for i in range(count):
            clients.append(open_slow_client(port, i))
        yield clients
    finally:
        for client in clients:
            client.sock.close()


def connections_per_worker(stack: Stack) -> dict[int, int]:
    """Established client connections each gunicorn worker holds on the gateway port."""
    out: dict[int, int] = {}
    for worker in psutil.Process(stack.gateway.pid).children():
        try:
            conns = worker.net_connections(kind="tcp")
        except psutil.Error:
            continue
        out[worker.pid] = sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED
                              and c.laddr and c.laddr.port == stack.gateway.port)
    return out


def probe_health(port: int) -> float | None:
    """Seconds /healthz took on a new connection, None when it did not answer in 2 s."""
    started = time.monotonic()
    try:
        reply = call(port, "GET", "/healthz", timeout=2.0)
    except OSError:
        return None
    return time.monotonic() - started if reply.status == 200 else None


DRIP_UPLOADS = 200
PROBE_TIMEOUT = 1.0  # seconds: a probe not answered within it fails the test
PROBES = ("/healthz", "/readyz", "/api/v1/policies")


@dataclass
class DripUpload:
    """An authenticated blob upload (PATCH) that sends one body byte every DRIP_EVERY s."""

    port: int
    location: str
    sock: socket.socket | None = None
    refused: int = 0  # answered (429) and reopened
    answers: Counter[int] = field(default_factory=Counter)

    def open(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.sendall(f"PATCH {self.location} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                     f"Authorization: {BASIC}\r\nContent-Type: application/octet-stream\r\n"
                     f"Content-Length: {1024 * 1024}\r\n\r\nx".encode())
        sock.setblocking(False)
        self.sock = sock

    def step(self, drip: bool) -> None:
        """Read any answer and close; on a drip tick reopen a closed upload (a client
        retrying after Retry-After: the attacker keeps DRIP_UPLOADS in flight), or drip."""
        if self.sock is None:
            if drip:
                self.open()
            return
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            data = None
        except OSError:
            data = b""
        if data is not None:  # answered or closed by the gateway
            if data.startswith(b"HTTP/1.1 "):
                self.answers[int(data[9:12])] += 1
            self.sock.close()
            self.sock = None
            self.refused += 1
        elif drip:
            with contextlib.suppress(OSError):
                self.sock.send(b"x")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def start_upload(port: int, name: str) -> str:
    """POST an upload session; its Location as a request target."""
    reply = v2_at(port, "POST", f"/v2/{name}/blobs/uploads/", b"")
    assert reply.status == 202, reply.short()
    location = reply.header("Location") or ""
    return location[location.index("/v2/"):]


def v2_at(port: int, method: str, target: str, body: bytes | None = None,
          timeout: float = 15.0) -> Reply:
    return call(port, method, target, body, {"Authorization": BASIC}, timeout=timeout)


def push_blob(port: int, name: str, data: bytes) -> str:
    """A monolithic blob upload; its digest."""
    digest = sha256(data)
    reply = v2_at(port, "PUT", f"{start_upload(port, name)}&digest={digest}", data)
    assert reply.status == 201, reply.short()
    return digest


def probe_loop(port: int, stop: threading.Event, latencies: dict[str, list[float]],
               failures: list[str]) -> None:
    """GET each probe path in turn, each on a fresh connection with a 1 s timeout."""
    headers = {"Authorization": BEARER}
    while not stop.is_set():
        for path in PROBES:
            started = time.monotonic()
            try:
                reply = call(port, "GET", path, headers=headers, timeout=PROBE_TIMEOUT)
            except OSError as exc:  # includes the 1 s timeout
                failures.append(f"{path}: {type(exc).__name__} after "
                                f"{time.monotonic() - started:.2f}s")
                continue
            if reply.status != 200:
                failures.append(f"{path}: {reply.short()}")
            latencies[path].append(time.monotonic() - started)
        stop.wait(0.1)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else 0.0


@pytest.mark.timeout(120)
def test_slowloris_does_not_starve_health(fault_stack: Stack) -> None:
    """Issue 14 item 10: with 200 authenticated uploads dripping a byte every 2 s (refused
    ones reopened at once), every /healthz, /readyz and API read is answered within the
    1 s client timeout, and a normal blob pull completes."""
    port = fault_stack.gateway.port
    blob = os.urandom(8 * 1024 * 1024)
    digest = push_blob(port, "dos/pull", blob)
    uploads = [DripUpload(port, start_upload(port, "dos/drip")) for _ in range(DRIP_UPLOADS)]
    latencies: dict[str, list[float]] = {path: [] for path in PROBES}
    failures: list[str] = []
    pulls: list[bool] = []
    stop = threading.Event()
    prober = threading.Thread(target=probe_loop, args=(port, stop, latencies, failures))
    try:
        for upload in uploads:
            upload.open()
        time.sleep(0.5)  # let the gateway take them
        per_worker = connections_per_worker(fault_stack)
        prober.start()
        started = next_drip = time.monotonic()
        while time.monotonic() - started < 14.0:
            now = time.monotonic()
            drip = now >= next_drip
            for upload in uploads:
                upload.step(drip)
            if drip:
                next_drip = now + 2.0
            if not pulls and now - started > 5.0:  # a normal pull in the middle of it
                reply = v2_at(port, "GET", f"/v2/dos/pull/blobs/{digest}", timeout=10)
                pulls.append(reply.status == 200 and sha256(reply.body) == digest)
            time.sleep(0.05)
        still_dripping = sum(1 for u in uploads if u.refused == 0)
    finally:
        stop.set()
        if prober.is_alive():
            prober.join()
        for upload in uploads:
            upload.close()
    answers: Counter[int] = sum((u.answers for u in uploads), Counter())
    counts = {path: len(values) for path, values in latencies.items()}
    figures = {path: f"p50 {1000 * sorted(v)[len(v) // 2]:.0f} ms, p99 {1000 * p99(v):.0f} ms"
               for path, v in latencies.items() if v}
    print(f"\n[hostile] {DRIP_UPLOADS} drip uploads (connections per worker {per_worker}): "
          f"still dripping after 14 s={still_dripping}, refused and reopened="
          f"{sum(u.refused for u in uploads)} answers={dict(answers)}; probes {counts}: "
          f"{figures}; pull ok={pulls}; failures={failures[:5]}")
    assert not failures, failures[:10]
    assert all(counts.values()), counts
    assert pulls == [True]
    # The drips really held threads: every refusal was the upload cap's 429, and uploads
    # that were let in were still open at the end (not cut, not answered).
    assert set(answers) <= {429}, answers
    assert still_dripping > 0


@pytest.mark.timeout(90)
def test_slow_requests_are_cut(fault_stack: Stack) -> None:
    port = fault_stack.gateway.port
    window = 30.0
    with slow_clients(port, 4) as clients:
        started = time.monotonic()
        while time.monotonic() - started < window:
            now = time.monotonic()
            for client in clients:
                client.step(now)
            if all(c.cut_at is not None for c in clients):
                break
            time.sleep(0.5)
        cut = [None if c.cut_at is None else round(c.cut_at - started, 1) for c in clients]
        print(f"\n[hostile] slow requests: cut after {cut} s (None = still open after "
              f"{window:.0f} s); bytes sent={[c.sent for c in clients]}")
    assert all(c is not None for c in cut), cut
    assert any(probe_health(port) is not None for _ in range(5))


# =============================================================================================
# 5. schemathesis, negative and positive mode, against every operation of openapi.yaml
# =============================================================================================
OPENAPI = Path(__file__).resolve().parents[2] / "openapi.yaml"
ST_EXAMPLES = 40


@pytest.mark.timeout(120)
def test_schemathesis_every_operation(hostile: Stack) -> None:
    """schemathesis-generated requests (negative and positive) against every operation of
    openapi.yaml: zero 5xx, and every /api/v1 4xx in the API envelope."""
    import schemathesis
    from hypothesis.errors import Unsatisfiable

    @schemathesis.serializer("application/x-ndjson")
    def _ndjson(ctx: Any, value: Any) -> bytes:  # a restore's body: whatever was generated
        return (value if isinstance(value, str) else json.dumps(value)).encode()

    schema = schemathesis.openapi.from_path(str(OPENAPI))
    # Always a valid token: with security parameters on, schemathesis sends random or no
    # credentials and a quarter of the requests never get past the 401.
    schema.config.generation.update(with_security_parameters=False)
    base_url = hostile.gw_url
    problems: list[str] = []
    statuses: Counter[int] = Counter()
    operations = 0
    started = time.monotonic()

    def runner(operation: Any, mode: Any, session: requests.Session) -> Callable[[], None]:
        @settings(max_examples=ST_EXAMPLES, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            headers = dict(case.headers or {})
            headers["Authorization"] = WEBHOOK_BEARER if "webhooks" in operation.path else BEARER
            response = case.call(base_url=base_url, session=session, headers=headers,
                                 timeout=15)
            status = response.status_code
            statuses[status] += 1
            where = (f"{operation.label} [{mode.value}] path={case.path_parameters} "
                     f"query={case.query} body={str(case.body)[:200]}")
            if status >= 500:
                problems.append(f"{where} -> {status} {response.text[:200]}")
            elif 400 <= status < 500 and operation.path.startswith("/api/v1/"):
                bad = api_envelope_problem(response.content)
                if bad:
                    problems.append(f"{where} -> {status} {bad}: {response.text[:200]}")

        return run

    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1
            for mode in (schemathesis.GenerationMode.NEGATIVE,
                         schemathesis.GenerationMode.POSITIVE):
                try:
                    runner(operation, mode, session)()
                except Unsatisfiable:
                    pass  # e.g. no negative request exists for an operation without parameters
    print(f"\n[hostile] schemathesis: operations={operations} modes=negative+positive "
          f"sent={sum(statuses.values())} in {time.monotonic() - started:.1f}s "
          f"statuses={dict(sorted(statuses.items()))} "
          f"unexplained={len(problems)}")
    assert operations >= 20
    assert not problems, "\n".join(problems[:25])
    assert_healthy(hostile)


def test_environments_at_before_epoch_is_not_a_500(hostile: Stack) -> None:
    """Found by schemathesis: `at` before 1970 made a negative XREVRANGE id (Redis
    ResponseError, 500). Fixed in store.promotions.at meanwhile; kept as a regression."""
    for at in ("0098-04-03T01:42:28Z", "1969-12-31T23:59:59Z", "1970-01-01T00:00:00+01:00"):
        reply = api(hostile, "GET", f"/api/v1/environments?repository=hostile/app&at={quote(at)}")
        assert reply.status < 500, (at, reply.short())


# =============================================================================================
# Issue 14 item 11: hostile bodies, URLs, cursors and times are 4xx, never 500
# =============================================================================================
DEEP = b"[" * 100_000


@pytest.mark.parametrize("target", ["/api/v1/promotions", "/api/v1/rollbacks", "/api/v1/scans",
                                    "/api/v1/subscriptions", "/api/v1/tokens"])
def test_deep_json_on_audited_and_metered_routes_is_invalid_request(hostile: Stack,
                                                                    target: str) -> None:
    """The authorization, audit and metrics hooks each re-parsed the body; a RecursionError in
    the metrics after-request hook turned the 400 into a 500."""
    for body in (DEEP, b"[" * 3000):
        reply = api(hostile, "POST", target, body=body)
        assert reply.status == 400, (target, len(body), reply.short())
        doc = reply.json()
        assert doc["code"] == "invalid_request"
        assert doc["errors"] == {"body": ["JSON nested too deeply"]}
    assert_healthy(hostile)


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/", "http://127.0.0.1:0/hook",
                                 "http://127.0.0.1:abc/", "http://[::1/hook"])
def test_subscription_url_with_a_bad_port_or_host_is_invalid_request(hostile: Stack,
                                                                     url: str) -> None:
    reply = api(hostile, "POST", "/api/v1/subscriptions",
                {"url": url, "events": ["promotion.succeeded"], "secret": "s" * 16})
    assert reply.status in (400, 422), (url, reply.short())
    doc = reply.json()
    assert doc["code"] == "invalid_request"
    assert list(doc["errors"]) == ["url"], doc
    assert api(hostile, "GET", "/api/v1/subscriptions").json()["items"] == []


@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/audit", "/api/v1/promotions",
                                  "/api/v1/scans"])
def test_cursor_beyond_a_stream_id_is_invalid_request(hostile: Stack, path: str) -> None:
    """A cursor decoding to `99999999999999999999-0` (over 2**64) reached Redis (500)."""
    for stream_id in ("99999999999999999999-0", "0-18446744073709551616", "1-1\n"):
        cursor = base64.urlsafe_b64encode(stream_id.encode()).decode().rstrip("=")
        reply = api(hostile, "GET", f"{path}?cursor={cursor}")
        assert reply.status == 400, (path, stream_id, reply.short())
        assert reply.json()["errors"] == {"cursor": ["not a cursor from this API"]}
    largest = base64.urlsafe_b64encode(b"18446744073709551615-0").decode().rstrip("=")
    assert api(hostile, "GET", f"{path}?cursor={largest}").status == 200


def test_times_outside_utc_range_are_invalid_request(hostile: Stack) -> None:
    """Valid ISO times whose UTC form is before year 1 or after 9999 overflowed (500), and a
    stored policy holding one broke every later GET of the policies."""
    early, late = "0001-01-01T00:00:00+14:00", "9999-12-31T23:00:00-14:00"
    reply = api(hostile, "GET", f"/api/v1/environments?repository=hostile/app&at={quote(early)}")
    assert reply.status == 422, reply.short()
    assert list(reply.json()["errors"]) == ["at"]
    reply = api(hostile, "POST", "/api/v1/tokens",
                {"name": "far-future", "role": "reader", "expires_at": late})
    assert reply.status == 422, reply.short()
    assert list(reply.json()["errors"]) == ["expires_at"]
    policy = {"name": "frozen", "repositories": ["frozen/*"], "promotion": {
        "production": {"freeze": [{"start": "2026-12-24T00:00:00Z", "end": late}]}}}
    reply = api(hostile, "PUT", "/api/v1/policies/frozen", policy)
    assert reply.status in (400, 422), reply.short()
    assert list(reply.json()["errors"]) == ["promotion.production.freeze.0.end"]
    assert api(hostile, "GET", "/api/v1/policies").status == 200


def test_catalog_with_absurd_n_is_not_a_500(hostile: Stack) -> None:
    reply = v2(hostile, "GET", "/v2/_catalog?n=" + "9" * 5000)
    assert reply.status == 200, reply.short()
    assert isinstance(reply.json()["repositories"], list)
    for bad in ("abc", "-1", "%C2%B2"):  # ² is a digit to str.isdigit, not to int()
        reply = v2(hostile, "GET", f"/v2/_catalog?n={bad}")
        assert reply.status == 400, (bad, reply.short())
        assert reply.json()["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"


def test_tag_list_with_absurd_n_is_not_a_500(hostile: Stack) -> None:
    push_index(hostile, "hostile/taglist", "t1", "absurd n")
    reply = v2(hostile, "GET", "/v2/hostile/taglist/tags/list?n=" + "9" * 5000)
    assert reply.status == 200, reply.short()
    assert reply.json()["tags"] == ["t1"]
    for bad in ("abc", "-1", "%C2%B2"):
        reply = v2(hostile, "GET", f"/v2/hostile/taglist/tags/list?n={bad}")
        assert reply.status == 400, (bad, reply.short())
        assert reply.json()["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"
