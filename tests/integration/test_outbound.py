"""Outgoing deliveries connect to the address the SSRF guard checked (issue 14, item 7).

A real redis-server holds the subscription and the delivery; real HTTP listeners on loopback
addresses play the subscriber and the internal service a rebinding attack aims at; the
resolver is the test's own (`socket.getaddrinfo` patched in this process, where the delivery
job runs): it answers an allow-listed address to the first question and 127.0.0.1 to every
later one, as a subscriber's DNS server with a zero TTL can.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import ssl
import subprocess
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from service.config import Settings
from service.services import Services
from testkit import procs
from workers import deliveries

HOST = "hooks.rebind.test"
ALLOWED = "127.0.0.2"  # the subscriber (allow-listed, as an operator would list a partner)
INTERNAL = "127.0.0.1"  # what the attacker wants reached (not allow-listed)
OTHER_INTERNAL = "127.0.0.3"
SECRET = "rebinding-secret-0123456789"


class Listener:
    """An HTTP server on one address that records every request it gets."""

    def __init__(self, address: str, port: int = 0) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                seen.append((dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((address, port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[procs.Proc]:
    proc = procs.redis_server(tmp_path_factory.mktemp("outbound"))
    yield proc
    proc.stop()


@pytest.fixture
def listeners() -> Iterator[dict[str, Listener]]:
    """The subscriber on ALLOWED and two internal services on the same port."""
    subscriber = Listener(ALLOWED)
    others = {INTERNAL: Listener(INTERNAL, subscriber.port),
              OTHER_INTERNAL: Listener(OTHER_INTERNAL, subscriber.port)}
    yield {ALLOWED: subscriber, **others}
    for listener in (subscriber, *others.values()):
        listener.close()


@pytest.fixture
def svc(redis_proc: procs.Proc, monkeypatch: pytest.MonkeyPatch) -> Services:
    services = Services.build(Settings(
        redis_url=f"redis://127.0.0.1:{redis_proc.port}/0", outbound_allowlist=(ALLOWED,),
        delivery_timeout=2))
    monkeypatch.setattr(deliveries, "services", lambda: services)
    return services


def resolver(monkeypatch: pytest.MonkeyPatch, *answers: list[str]) -> list[str]:
    """Patch getaddrinfo: the n-th question about HOST gets answers[n] (the last one
    repeated); IP literals resolve as usual. Returns the log of questions about HOST."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def fake(host, port, *args, **kwargs):
        if host != HOST:
            return real(host, port, *args, **kwargs)
        addresses = answers[min(len(asked), len(answers) - 1)]
        asked.append(",".join(addresses))
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (a, int(port)))
                for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return asked


def new_delivery(svc: Services, url: str) -> str:
    sub_id = "sub_" + hashlib.sha1(url.encode()).hexdigest()[:12]
    svc.subscriptions.put({"id": sub_id, "url": url, "events": ["scan.completed"],
                           "secret": SECRET, "created_at": "2026-11-28T00:00:00Z"})
    delivery_id = "dlv_" + uuid.uuid4().hex
    svc.subscriptions.add_delivery({
        "id": delivery_id, "subscription_id": sub_id, "event": "scan.completed",
        "payload": json.dumps({"event": "scan.completed", "delivery": delivery_id}),
        "status": "pending", "attempts": [], "created_at": "2026-11-28T00:00:00Z"})
    return delivery_id


def test_a_second_dns_answer_cannot_steer_the_delivery_to_loopback(
        svc: Services, listeners: dict[str, Listener], monkeypatch: pytest.MonkeyPatch):
    asked = resolver(monkeypatch, [ALLOWED], [INTERNAL])
    port = listeners[ALLOWED].port
    delivery_id = new_delivery(svc, f"http://{HOST}:{port}/hook?x=1")

    assert deliveries.deliver(delivery_id) == "delivered"

    assert listeners[INTERNAL].requests == []
    assert len(listeners[ALLOWED].requests) == 1
    headers, body = listeners[ALLOWED].requests[0]
    assert headers["Host"] == f"{HOST}:{port}"
    assert headers["X-Tagwarden-Signature"] == "sha256=" + hmac.new(
        SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Tagwarden-Delivery"] == delivery_id
    assert json.loads(body)["delivery"] == delivery_id
    assert asked == [ALLOWED]  # resolved once, by the check
    attempt = svc.subscriptions.delivery(delivery_id)["attempts"][0]
    assert (attempt["status"], attempt["response"], attempt["error"]) == (200, "ok", None)


def test_an_internal_answer_at_check_time_is_refused_without_connecting(
        svc: Services, listeners: dict[str, Listener], monkeypatch: pytest.MonkeyPatch):
    resolver(monkeypatch, [INTERNAL])
    delivery_id = new_delivery(svc, f"http://{HOST}:{listeners[ALLOWED].port}/hook")

    with pytest.raises(deliveries.DeliveryFailed):
        deliveries.deliver(delivery_id)

    assert [len(x.requests) for x in listeners.values()] == [0, 0, 0]
    attempt = svc.subscriptions.delivery(delivery_id)["attempts"][0]
    assert attempt["status"] is None
    assert attempt["error"] == (f"{HOST} resolves to an internal address; add it to "
                                "TAGWARDEN_OUTBOUND_ALLOWLIST to allow it")


def test_an_allowlisted_address_does_not_vouch_for_an_internal_one_beside_it(
        svc: Services, listeners: dict[str, Listener], monkeypatch: pytest.MonkeyPatch):
    """A name answering [internal, allowed] used to pass (one listed address sufficed) and
    the client then connected to the first answer."""
    resolver(monkeypatch, [OTHER_INTERNAL, ALLOWED])
    delivery_id = new_delivery(svc, f"http://{HOST}:{listeners[ALLOWED].port}/hook")

    with pytest.raises(deliveries.DeliveryFailed):
        deliveries.deliver(delivery_id)

    assert [len(x.requests) for x in listeners.values()] == [0, 0, 0]
    assert "internal address" in svc.subscriptions.delivery(delivery_id)["attempts"][0]["error"]


def test_a_refused_connection_moves_on_to_the_next_checked_address(
        redis_proc: procs.Proc, monkeypatch: pytest.MonkeyPatch):
    """Several approved addresses: the next is tried only when connecting fails."""
    services = Services.build(Settings(
        redis_url=f"redis://127.0.0.1:{redis_proc.port}/0",
        outbound_allowlist=(ALLOWED, "127.0.0.4"), delivery_timeout=2))
    monkeypatch.setattr(deliveries, "services", lambda: services)
    closed = Listener("127.0.0.4")
    port = closed.port
    closed.close()  # nobody listens on 127.0.0.4:port any more
    subscriber = Listener(ALLOWED, port)
    try:
        resolver(monkeypatch, ["127.0.0.4", ALLOWED])
        delivery_id = new_delivery(services, f"http://{HOST}:{port}/hook")
        assert deliveries.deliver(delivery_id) == "delivered"
        assert len(subscriber.requests) == 1
        assert subscriber.requests[0][0]["Host"] == f"{HOST}:{port}"
    finally:
        subscriber.close()


def make_certs(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A test CA and a leaf certificate for `name` signed by it (openssl CLI)."""
    ca_key, ca, key, csr, cert = (directory / f for f in
                                  ("ca.key", "ca.pem", "leaf.key", "leaf.csr", "leaf.pem"))
    ext = directory / "ext.cnf"
    ext.write_text(f"subjectAltName=DNS:{name}\n")
    for argv in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
         "-days", "2", "-subj", "/CN=tagwarden test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", f"/CN={name}"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "2", "-extfile", ext],
    ):
        subprocess.run(["openssl", *map(str, argv)], check=True, capture_output=True,
                       timeout=60)
    return ca, cert, key


@pytest.mark.parametrize("cert_name", [HOST, "someone-else.test"])
def test_https_delivery_to_the_checked_address_verifies_the_url_host(
        svc: Services, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cert_name: str):
    """Connected by IP, TLS still sends the URL's host as SNI and checks the certificate
    against it: a certificate for another name fails the attempt."""
    ca, cert, key = make_certs(tmp_path, cert_name)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
    listener = Listener(ALLOWED)
    sni: list[str | None] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, server_name, ctx: sni.append(server_name)
    listener.server.socket = context.wrap_socket(listener.server.socket, server_side=True)
    try:
        resolver(monkeypatch, [ALLOWED], [INTERNAL])
        delivery_id = new_delivery(svc, f"https://{HOST}:{listener.port}/hook")
        if cert_name == HOST:
            assert deliveries.deliver(delivery_id) == "delivered"
            assert listener.requests[0][0]["Host"] == f"{HOST}:{listener.port}"
        else:
            with pytest.raises(deliveries.DeliveryFailed):
                deliveries.deliver(delivery_id)
            assert listener.requests == []
            attempt = svc.subscriptions.delivery(delivery_id)["attempts"][0]
            assert (attempt["status"], attempt["error"]) == (None, "SSLError")
        assert sni == [HOST]
    finally:
        listener.close()
