"""Request factories run inside the load processes (see bench.load); stdlib + bench.client."""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

from bench.client import Http

MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])


class _Call:
    """A callable bound to one keep-alive connection."""

    def __init__(self, http_: Http) -> None:
        self.http = http_

    def close_all(self) -> None:
        self.http.close()


def manifest_get_head(args: dict[str, Any], index: int) -> Any:
    """Alternate GET and HEAD of one manifest by tag (what `docker pull` starts with)."""
    http_ = Http(args["port"], args.get("auth"))
    path = args["path"]
    headers = {"Accept": MANIFEST_ACCEPT}
    state = {"n": index}

    def call() -> tuple[str, None]:
        state["n"] += 1
        method = "GET" if state["n"] % 2 else "HEAD"
        status, _, _ = http_.request(method, path, headers=headers)
        if status != 200:
            raise RuntimeError(f"{method} {path} answered {status}")
        return method, None

    return call


def _event(event_id: str, repository: str, kind: int) -> dict[str, Any]:
    """A registry notification event shaped like distribution 2.8 sends them."""
    digest = "sha256:" + uuid.UUID(int=random.getrandbits(128)).hex * 2
    if kind % 2:
        action, media_type, tag = "pull", "application/vnd.oci.image.manifest.v1+json", "v1.0.0"
    else:
        action, media_type, tag = "push", "application/octet-stream", None
    target = {"mediaType": media_type, "size": 1234, "digest": digest, "length": 1234,
              "repository": repository, "url": f"http://127.0.0.1:5000/v2/{repository}/blobs/"
              f"{digest}"}
    if tag:
        target["tag"] = tag
    return {
        "id": event_id, "timestamp": "2026-01-01T00:00:00.000000000Z", "action": action,
        "target": target,
        "request": {"id": uuid.uuid4().hex, "addr": "127.0.0.1:40000", "host": "127.0.0.1",
                    "method": "GET" if action == "pull" else "PUT",
                    "useragent": "docker/25.0 go/go1.21"},
        "actor": {"name": "ci"},
        "source": {"addr": "registry:5000", "instanceID": "bench"},
    }


def webhook_post(args: dict[str, Any], index: int) -> Any:
    """POST envelopes of `per_envelope` events; `dup_rate` of the events repeat an id this
    client already sent (the registry's at-least-once redelivery)."""
    http_ = Http(args["port"], args["auth"])
    per = args["per_envelope"]
    dup_rate = args["dup_rate"]
    prefix = f"{args['run']}-{index}-"
    rng = random.Random(index)
    sent: list[str] = []
    state = {"n": 0}
    headers = {"Content-Type": "application/vnd.docker.distribution.events.v1+json"}
    repository = args["repository"]

    def call() -> tuple[str, dict[str, int]]:
        events = []
        dups = 0
        for _ in range(per):
            if sent and rng.random() < dup_rate:
                event_id = rng.choice(sent)
                dups += 1
            else:
                state["n"] += 1
                event_id = prefix + str(state["n"])
                sent.append(event_id)
            events.append(_event(event_id, repository, state["n"]))
        body = json.dumps({"events": events}).encode()
        status, _, data = http_.request("POST", "/api/v1/webhooks/registry", body, headers)
        if status != 200:
            raise RuntimeError(f"webhook answered {status}: {data[:200]!r}")
        result = json.loads(data)
        return "post", {"events": per, "dups_sent": dups, "accepted": result["accepted"],
                        "duplicates": result["duplicates"], "skipped": result["skipped"]}

    return call


def promote(args: dict[str, Any], index: int) -> Any:
    """POST /api/v1/promotions alternating two tags into `environment`."""
    http_ = Http(args["port"], args["auth"])
    repos = args["repositories"]
    repository = repos[index % len(repos)]
    tags = args["tags"]
    state = {"n": index}

    def call() -> tuple[str, dict[str, int]]:
        state["n"] += 1
        tag = tags[state["n"] % len(tags)]
        status, body = http_.json("POST", "/api/v1/promotions", {
            "repository": repository, "environment": args["environment"], "tag": tag})
        if status != 201:
            raise RuntimeError(f"promotion answered {status}: {str(body)[:300]}")
        return "promote", {"ok": 1}

    return call


def registry_pair(args: dict[str, Any], index: int) -> Any:
    """The floor of a promotion: GET the manifest of a tag, PUT the same bytes under the
    environment tag (straight to whichever server `port` is)."""
    http_ = Http(args["port"], args.get("auth"))
    repos = args["repositories"]
    repository = repos[index % len(repos)]
    tags = args["tags"]
    state = {"n": index}
    accept = {"Accept": MANIFEST_ACCEPT}

    def call() -> tuple[str, dict[str, int]]:
        state["n"] += 1
        tag = tags[state["n"] % len(tags)]
        status, headers, body = http_.request("GET", f"/v2/{repository}/manifests/{tag}",
                                              headers=accept)
        if status != 200:
            raise RuntimeError(f"GET manifest answered {status}")
        status, _, data = http_.request(
            "PUT", f"/v2/{repository}/manifests/{args['environment']}", body,
            {"Content-Type": headers["Content-Type"]})
        if status != 201:
            raise RuntimeError(f"PUT manifest answered {status}: {data[:200]!r}")
        return "pair", {"ok": 1}

    return call


def history_page(args: dict[str, Any], index: int) -> Any:
    """GET one page of promotion history (optionally from a cursor)."""
    http_ = Http(args["port"], args["auth"])
    paths = args["paths"]
    state = {"n": index}

    def call() -> tuple[str, None]:
        state["n"] += 1
        label, path = paths[state["n"] % len(paths)]
        status, _, data = http_.request("GET", path)
        if status != 200:
            raise RuntimeError(f"history answered {status}: {data[:200]!r}")
        return label, None

    return call
