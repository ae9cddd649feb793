"""SSRF guard for outgoing webhooks: only http(s), no internal address unless allowed, and
the connection made to exactly the address that was checked.

Resolving a name to check it and letting an HTTP client resolve it again to connect is a
DNS-rebinding hole: a resolver controlled by the subscriber can answer a public address to
the check and 127.0.0.1 to the client. `vet` resolves once and returns the addresses it
approved; `post` connects to one of those by IP, sending the URL's host as `Host` and, for
https, as TLS SNI and the name the certificate must match.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import urllib3
from requests.certs import where as ca_bundle
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from service.domain.errors import InvalidRequest

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

READ_AT_MOST = 4096  # bytes of a receiver's answer kept (the delivery records 500)


@dataclass(frozen=True)
class Target:
    """A URL that passed the guard, with the addresses it may be reached at."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        """`Host` as the URL spells it (the port only when the URL names one)."""
        return urlsplit(self.url).netloc

    @property
    def target(self) -> str:
        """The request target: path and query."""
        parts = urlsplit(self.url)
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _listed(host: str, address: Address, allowlist: tuple[str, ...]) -> bool:
    """Whether the allowlist names the host, the address, or a network holding it."""
    for item in allowlist:
        if "/" in item:
            if address in ipaddress.ip_network(item, strict=False):
                return True
        elif item == host.lower() or item == str(address):
            return True
    return False


def _internal(address: Address) -> bool:
    return (address.is_loopback or address.is_link_local or address.is_private
            or address.is_reserved or address.is_multicast or address.is_unspecified)


def resolve(host: str, port: int) -> list[Address]:
    """Every address a host name resolves to (an IP literal resolves to itself)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError:
        return []
    found = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    return list(dict.fromkeys(found))  # once each, in the resolver's order


def vet(url: str, allowlist: tuple[str, ...], field: str = "url") -> Target:
    """The URL and the addresses it may be called at; InvalidRequest naming why not.

    Every address the name resolves to must be public or allow-listed (by host name,
    address or CIDR); one internal address that is not refuses the URL."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if parts.port == 0:
            raise ValueError("Port 0 cannot be connected to")
    except ValueError as exc:  # a port out of 0-65535 or not a number, a bad [IPv6] host
        raise InvalidRequest(f"invalid URL: {exc}", errors={field: [f"invalid URL: {exc}"]}
                             ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("subscription URLs must be http(s) with a host",
                             errors={field: ["must be an http or https URL"]})
    if parts.username or parts.password:
        raise InvalidRequest("credentials in the URL are not allowed; use the secret",
                             errors={field: ["must not contain user:password"]})
    addresses = resolve(parts.hostname, port)
    if not addresses and parts.hostname.lower() not in allowlist:
        raise InvalidRequest(f"host {parts.hostname!r} does not resolve",
                             errors={field: ["host does not resolve"]})
    if any(_internal(a) and not _listed(parts.hostname, a, allowlist) for a in addresses):
        raise InvalidRequest(
            f"{parts.hostname} resolves to an internal address; add it to "
            "TAGWARDEN_OUTBOUND_ALLOWLIST to allow it",
            errors={field: ["internal addresses are refused unless allow-listed"]})
    return Target(url, parts.scheme, parts.hostname, port, tuple(str(a) for a in addresses))


def check_url(url: str, allowlist: tuple[str, ...], field: str = "url") -> str:
    """The URL if it may be called; InvalidRequest naming why not."""
    return vet(url, allowlist, field).url


def _ca_certs() -> str:
    """The CA bundle requests would use (REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE, else certifi's),
    so a deployment that trusts an internal CA keeps doing so."""
    return (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            or ca_bundle())


def _pool(target: Target, address: str, timeout: float) -> urllib3.HTTPConnectionPool:
    limits = urllib3.Timeout(connect=timeout, read=timeout)
    if target.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            address, target.port, timeout=limits, retries=False, maxsize=1,
            server_hostname=target.host, assert_hostname=target.host,
            cert_reqs="CERT_REQUIRED", ca_certs=_ca_certs())
    return urllib3.HTTPConnectionPool(address, target.port, timeout=limits, retries=False,
                                      maxsize=1)


def _attempt(target: Target, address: str, body: bytes, headers: dict[str, str],
             timeout: float) -> tuple[int, bytes]:
    pool = _pool(target, address, timeout)
    try:
        resp = pool.urlopen("POST", target.target, body=body, headers=headers,
                            redirect=False, preload_content=False, assert_same_host=False)
        try:
            return resp.status, resp.read(READ_AT_MOST)
        finally:
            resp.release_conn()
    finally:
        pool.close()


def post(target: Target, body: bytes, headers: dict[str, str], timeout: float
         ) -> tuple[int, bytes]:
    """POST to the vetted addresses in order, the next one only when connecting fails:
    (status, the start of the answer). urllib3's errors propagate."""
    if not target.addresses:
        raise InvalidRequest(f"host {target.host!r} does not resolve")
    headers = {**headers, "Host": target.host_header}
    *others, last = target.addresses
    for address in others:
        try:
            return _attempt(target, address, body, headers, timeout)
        except (NewConnectionError, ConnectTimeoutError):
            continue
    return _attempt(target, last, body, headers, timeout)
