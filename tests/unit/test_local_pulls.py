"""Blob GETs from the registry's storage: the WSGI answer is gunicorn's file wrapper itself
(so gthread sends it with sendfile), links and paths are checked, ranges validated."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from service.core.manifest_cache import CachedManifest, ManifestCache
from service.http.v2.local_pulls import byte_range
from service.registry.storage import RegistryStorage

DATA = b"layer bytes " * 1000
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


def _store(root: Path, repo: str, digest: str = DIGEST, data: bytes = DATA) -> Path:
    v2 = root / "docker" / "registry" / "v2"
    blob = v2 / "blobs" / "sha256" / digest[7:9] / digest[7:] / "data"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    link = v2 / "repositories" / repo / "_layers" / "sha256" / digest[7:] / "link"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.write_text(digest)
    return v2


class Wrapper:
    """Stands for gunicorn's FileWrapper: the type gthread checks with isinstance."""

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self):
        return iter(lambda: self.filelike.read(self.blksize), b"")

    def close(self):
        self.filelike.close()


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from service import create_app

    _store(tmp_path, "team/app")
    monkeypatch.setenv("TAGWARDEN_REDIS_URL", "redis://127.0.0.1:1/0")  # never reached
    monkeypatch.setenv("TAGWARDEN_REDIS_TIMEOUT", "0.05")
    monkeypatch.setenv("TAGWARDEN_AUTH_STALE_TTL", "0")
    app = create_app({"anonymous_pull": True, "registry_storage": str(tmp_path),
                      "auth_failure_limit": "off"})
    app.extensions["tagwarden"].pulls = Recorded()
    return app


class Recorded(list):
    """Stands for the pull-event recorder: keeps what would be written."""

    def record(self, event):
        self.append(event)


def _get(app, path: str, peer: str = "198.51.100.20", **headers: str):
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SERVER_NAME": "gw",
               "SERVER_PORT": "80", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(),
               "wsgi.errors": io.StringIO(), "wsgi.file_wrapper": Wrapper,
               "REMOTE_ADDR": peer, "SERVER_PROTOCOL": "HTTP/1.1",
               **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}}
    started: dict = {}

    def start_response(status, headers, exc_info=None):
        started["status"], started["headers"] = status, dict(headers)

    body = app.wsgi_app(environ, start_response)
    return body, started["status"], started["headers"]


def test_a_linked_blob_is_answered_with_the_file_wrapper_itself(app):
    body, status, headers = _get(app, f"/v2/team/app/blobs/{DIGEST}")
    assert type(body) is Wrapper  # not a generator, not a counting wrapper: sendfile applies
    assert status == "200 OK"
    assert headers["Content-Length"] == str(len(DATA))
    assert headers["Docker-Content-Digest"] == DIGEST
    assert headers["Etag"] == f'"{DIGEST}"'
    assert b"".join(body) == DATA
    body.close()
    [event] = app.extensions["tagwarden"].pulls
    assert (event["action"], event["repository"], event["digest"], event["size"],
            event["source"], event["request"]["method"]) == (
        "pull", "team/app", DIGEST, len(DATA), "gateway", "GET")


def test_a_linked_blob_is_copied_to_a_client_on_this_host_and_counted_once(app):
    from service.obs import metrics

    sent = metrics.PROXY_BYTES.labels("out")._value.get()
    body, status, headers = _get(app, f"/v2/team/app/blobs/{DIGEST}", peer="127.0.0.1")
    assert not isinstance(body, Wrapper)  # read and written: no sendfile on loopback
    assert status == "200 OK" and headers["Content-Length"] == str(len(DATA))
    assert b"".join(body) == DATA
    body.close()
    assert metrics.PROXY_BYTES.labels("out")._value.get() == sent + len(DATA)


def test_a_blob_linked_in_another_repository_only_is_left_to_the_registry(app):
    from service.http.v2 import local_pulls

    with app.test_request_context(f"/v2/team/other/blobs/{DIGEST}"):
        from service.registry.routes import V2Route

        assert local_pulls.blob(V2Route("blob", "team/other", DIGEST)) is None
    assert app.extensions["tagwarden"].pulls == []


def test_a_range_seeks_the_file_and_says_where(app):
    body, status, headers = _get(app, f"/v2/team/app/blobs/{DIGEST}", Range="bytes=10-19")
    assert type(body) is Wrapper
    assert status == "206 PARTIAL CONTENT"
    assert headers["Content-Range"] == f"bytes 10-19/{len(DATA)}"
    assert headers["Content-Length"] == "10"
    assert body.filelike.tell() == 10  # gunicorn sends Content-Length bytes from here
    body.close()


def test_gunicorn_sendfile_is_not_disabled():
    import runpy

    conf = runpy.run_path(str(Path(__file__).resolve().parents[2] / "gunicorn.conf.py"))
    assert conf.get("sendfile", None) in (None, True)
    assert os.environ.get("SENDFILE", "y").lower() in ("y", "1", "yes", "true")


@pytest.mark.parametrize(("header", "size", "expected"), [
    (None, 100, None),
    ("bytes=0-9", 100, (0, 9)),
    ("bytes=90-", 100, (90, 99)),
    ("bytes=-10", 100, (90, 99)),
    ("bytes=-1000", 100, (0, 99)),
    ("bytes=50-1000", 100, (50, 99)),
    ("bytes=100-", 100, False),  # unsatisfiable: the registry answers
    ("bytes=9-5", 100, False),
    ("bytes=-0", 100, False),
    ("bytes=0-1,5-6", 100, False),  # several ranges: the registry answers
    ("items=0-5", 100, False),
    ("bytes= 1-2", 100, False),
    ("bytes=0-0", 0, False),
])
def test_only_single_satisfiable_ranges_are_answered_locally(header, size, expected):
    assert byte_range(header, size) == expected


def test_links_must_name_the_digest_inside_the_root(tmp_path: Path):
    v2 = _store(tmp_path, "team/app")
    storage = RegistryStorage(str(tmp_path))
    assert storage.blob_linked("team/app", DIGEST)
    assert not storage.blob_linked("team/other", DIGEST)  # linked elsewhere only
    other = "sha256:" + "a" * 64
    link = v2 / "repositories" / "team" / "app" / "_layers" / "sha256" / other[7:] / "link"
    link.parent.mkdir(parents=True)
    link.write_text(DIGEST)  # a link that names another digest is not believed
    assert not storage.blob_linked("team/app", other)
    # a repository directory that is a symlink to another one is refused
    (v2 / "repositories" / "evil").symlink_to(v2 / "repositories" / "team")
    assert not storage.blob_linked("evil/app", DIGEST)
    # a blob data file that is a symlink (to outside the root) is refused
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.write_bytes(b"secret")
    data = storage.blob_path(other)
    Path(data).parent.mkdir(parents=True)
    Path(data).symlink_to(outside)
    assert storage.open_blob(other) is None
    opened = storage.open_blob(DIGEST)
    assert opened is not None and opened[1] == len(DATA)
    opened[0].close()
    missing = RegistryStorage.open(str(tmp_path / "missing"))
    assert missing is not None and not missing.blob_linked("team/app", DIGEST)
    assert RegistryStorage.open("") is None


def test_the_manifest_cache_is_bounded_by_bytes():
    cache = ManifestCache(64 * 1024)
    entries = {f"sha256:{i:064x}": CachedManifest(bytes(4000), "t", (("A", "b"),))
               for i in range(40)}
    for digest, entry in entries.items():
        assert cache.put(digest, entry)
    assert cache.size <= 64 * 1024
    assert cache.get("sha256:" + "0" * 64) is None  # the oldest went first
    assert cache.get(f"sha256:{39:064x}") is entries[f"sha256:{39:064x}"]
    assert not cache.put("sha256:" + "f" * 64, CachedManifest(bytes(9000), "t", ()))
