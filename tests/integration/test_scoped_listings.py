"""Issue 14 item 4: every listing shows a scoped token only the repositories its globs cover.

A private stack holds four repositories (two inside `team-a/*`, two outside) with pushes,
refused pushes (events), scans, promotions, subscriptions and their deliveries. A `team-a/*`
reader and ci token must see exactly the team-a items of each listing, page by page (a page
with a next cursor is full), never `secret/app`; the admin sees everything; readers and ci
never see a subscription's URL or secret, nor a delivery's bodies.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from testkit import procs
from tests.integration.conftest import Stack, start_stack

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
TEAM = ["team-a/app", "team-a/lib"]
OUTSIDE = ["other/x", "secret/app"]
ALL = sorted(TEAM + OUTSIDE)
SUB_URL = "http://127.0.0.1:9/hook?token=url-credential-0123"
SUB_SECRET = "subscription-secret-0123456789"
LISTINGS = ["/api/v1/scans", "/api/v1/events", "/api/v1/audit", "/api/v1/promotions"]


def basic(secret: str) -> tuple[str, str]:
    return ("user", secret)


def index_body(note: str) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [],
                       "annotations": {"note": note}}).encode()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The stack, populated, and the secrets of a team-a reader and ci token."""
    stack = start_stack(tmp_path_factory.mktemp("scoped"), worker=False,
                        TAGWARDEN_RATE_LIMIT="off")
    try:
        yield populate(stack)
    finally:
        stack.stop()


def populate(stack: Stack) -> dict[str, Any]:
    admin = stack.admin()
    url = stack.gw_url
    subs = {}
    for name, globs in (("team", ["team-a/*"]), ("all", ["*"]), ("secret", ["secret/*"])):
        resp = admin.post(f"{url}/api/v1/subscriptions", timeout=10, json={
            "url": SUB_URL, "events": ["promotion.succeeded"], "secret": SUB_SECRET,
            "repositories": globs})
        assert resp.status_code == 201, resp.text
        subs[name] = resp.json()["id"]
    for repo in ALL:
        upload_blob(stack, repo)  # distribution 2.8 catalogs only repositories with layers
        for tag in ("v1.0.0", "v1.0.1"):
            resp = requests.put(f"{url}/v2/{repo}/manifests/{tag}", auth=basic(procs.ADMIN_TOKEN),
                                data=index_body(f"{repo}:{tag}"),
                                headers={"Content-Type": OCI_INDEX}, timeout=10)
            assert resp.status_code == 201, resp.text
        denied = requests.put(f"{url}/v2/{repo}/manifests/production",
                              auth=basic(procs.ADMIN_TOKEN), data=index_body(repo),
                              headers={"Content-Type": OCI_INDEX}, timeout=10)
        assert denied.status_code == 403, denied.text  # a push.denied event
        for tag in ("v1.0.0", "v1.0.1"):
            resp = admin.post(f"{url}/api/v1/promotions", timeout=10, json={
                "repository": repo, "environment": "develop", "tag": tag})
            assert resp.status_code == 201, resp.text
            resp = admin.post(f"{url}/api/v1/scans", timeout=10,
                              json={"repository": repo, "reference": tag})
            assert resp.status_code == 202, resp.text
    tokens = {}
    for role in ("reader", "ci"):
        resp = admin.post(f"{url}/api/v1/tokens", timeout=10, json={
            "name": f"team-a-{role}", "role": role, "repositories": ["team-a/*"]})
        assert resp.status_code == 201, resp.text
        tokens[role] = resp.json()["token"]
    settle_events(stack)
    return {"stack": stack, "subs": subs, "tokens": tokens}


def upload_blob(stack: Stack, repo: str) -> None:
    data = repo.encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    auth = basic(procs.ADMIN_TOKEN)
    start = requests.post(f"{stack.gw_url}/v2/{repo}/blobs/uploads/", auth=auth, timeout=10)
    assert start.status_code == 202, start.text
    location = start.headers["Location"]
    sep = "&" if "?" in location else "?"
    done = requests.put(f"{location}{sep}digest={digest}", data=data, auth=auth, timeout=10,
                        headers={"Content-Type": "application/octet-stream"})
    assert done.status_code == 201, done.text


def settle_events(stack: Stack) -> None:
    """Wait until the registry's notifications of the setup (pushes, pulls) are all in, so the
    event log no longer changes under the comparisons."""
    counts: list[int] = []
    for _ in range(60):
        resp = stack.admin().get(f"{stack.gw_url}/api/v1/events?limit=500", timeout=10)
        assert resp.status_code == 200, resp.text
        counts.append(len(resp.json()["items"]))
        if len(counts) >= 3 and len(set(counts[-3:])) == 1:
            return
        time.sleep(1)
    raise AssertionError(f"event log never settled: {counts}")


def get(world: dict[str, Any], token: str, path: str, **params: Any) -> requests.Response:
    return requests.get(f"{world['stack'].gw_url}{path}", params=params, timeout=10,
                        headers={"Authorization": f"Bearer {token}"})


def walk(world: dict[str, Any], token: str, path: str, limit: int, **params: Any
         ) -> list[dict[str, Any]]:
    """Every item of a listing, page by page; each page with a next cursor is full."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(500):
        resp = get(world, token, path, limit=limit, **params,
                   **({"cursor": cursor} if cursor else {}))
        assert resp.status_code == 200, resp.text
        page = resp.json()
        cursor = page["next_cursor"]
        if cursor is not None:
            assert len(page["items"]) == limit, (path, limit, page)
        items.extend(page["items"])
        if cursor is None:
            return items
    raise AssertionError(f"{path} never ended")


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item.get("id") or json.dumps(item, sort_keys=True) for item in items]


@pytest.mark.parametrize("path", LISTINGS)
@pytest.mark.parametrize("role", ["reader", "ci"])
def test_scoped_token_lists_only_its_repositories(world: dict[str, Any], path: str,
                                                  role: str) -> None:
    everything = walk(world, procs.ADMIN_TOKEN, path, 500)
    assert {i.get("repository") for i in everything} >= set(ALL)
    expected = [i for i in everything if i.get("repository") in TEAM]
    assert {i["repository"] for i in expected} == set(TEAM)
    for limit in (1, 2, 3, 500):
        seen = walk(world, world["tokens"][role], path, limit)
        assert ids(seen) == ids(expected), (path, limit)


@pytest.mark.parametrize("path", LISTINGS)
def test_explicit_repository_outside_the_scope_is_403(world: dict[str, Any], path: str) -> None:
    for role in ("reader", "ci"):
        resp = get(world, world["tokens"][role], path, repository="secret/app")
        assert resp.status_code == 403, resp.text
        assert resp.json()["code"] == "forbidden"
        inside = get(world, world["tokens"][role], path, repository="team-a/app")
        assert inside.status_code == 200, inside.text
        assert {i["repository"] for i in inside.json()["items"]} == {"team-a/app"}


def test_events_filtered_by_action_stay_in_scope(world: dict[str, Any]) -> None:
    seen = walk(world, world["tokens"]["reader"], "/api/v1/events", 1, action="push.denied")
    assert sorted(i["repository"] for i in seen) == TEAM


def test_records_of_other_repositories_are_not_found_by_id(world: dict[str, Any]) -> None:
    token = world["tokens"]["reader"]
    for path in ("/api/v1/scans", "/api/v1/promotions"):
        records = get(world, procs.ADMIN_TOKEN, path, repository="secret/app").json()["items"]
        assert records
        for record in records:
            resp = get(world, token, f"{path}/{record['id']}")
            assert resp.status_code == 404, resp.text
        mine = get(world, procs.ADMIN_TOKEN, path, repository="team-a/app").json()["items"][0]
        assert get(world, token, f"{path}/{mine['id']}").status_code == 200


@pytest.mark.parametrize("role", ["reader", "ci"])
def test_subscriptions_without_url_or_secret_for_non_admins(world: dict[str, Any],
                                                            role: str) -> None:
    subs = world["subs"]
    resp = get(world, world["tokens"][role], "/api/v1/subscriptions")
    assert resp.status_code == 200, resp.text
    items = resp.json()["items"]
    assert [s["id"] for s in items] == [subs["team"]]
    assert items[0]["repositories"] == ["team-a/*"]
    assert "url" not in items[0] and "secret" not in items[0]
    assert SUB_SECRET not in resp.text and "url-credential" not in resp.text


def test_admin_sees_every_subscription_with_its_url(world: dict[str, Any]) -> None:
    resp = get(world, procs.ADMIN_TOKEN, "/api/v1/subscriptions")
    items = resp.json()["items"]
    assert sorted(s["id"] for s in items) == sorted(world["subs"].values())
    assert {s["url"] for s in items} == {SUB_URL}
    assert SUB_SECRET not in resp.text


@pytest.mark.parametrize("role", ["reader", "ci"])
def test_deliveries_without_bodies_for_non_admins(world: dict[str, Any], role: str) -> None:
    token, subs = world["tokens"][role], world["subs"]
    admin_view = walk(world, procs.ADMIN_TOKEN,
                      f"/api/v1/subscriptions/{subs['team']}/deliveries", 500)
    assert len(admin_view) == 4  # two promotions of each team-a repository
    assert all("team-a/" in d["payload"] for d in admin_view)
    for limit in (1, 3):
        seen = walk(world, token, f"/api/v1/subscriptions/{subs['team']}/deliveries", limit)
        assert [d["id"] for d in seen] == [d["id"] for d in admin_view]
        for delivery in seen:
            assert "payload" not in delivery
            assert all("response" not in a for a in delivery["attempts"])
    for other in ("all", "secret"):
        resp = get(world, token, f"/api/v1/subscriptions/{subs[other]}/deliveries")
        assert resp.status_code == 404, resp.text


def test_admin_deliveries_of_every_subscription(world: dict[str, Any]) -> None:
    subs = world["subs"]
    counts = {name: len(walk(world, procs.ADMIN_TOKEN,
                             f"/api/v1/subscriptions/{sub}/deliveries", 2))
              for name, sub in subs.items()}
    assert counts == {"team": 4, "all": 8, "secret": 2}


def catalog(world: dict[str, Any], secret: str, **params: Any) -> requests.Response:
    resp = requests.get(f"{world['stack'].gw_url}/v2/_catalog", params=params,
                        auth=basic(secret), timeout=10)
    assert resp.status_code == 200, resp.text
    return resp


def walk_catalog(world: dict[str, Any], secret: str, n: int) -> list[str]:
    """Every repository, following the gateway's Link; each page with a Link is full."""
    names: list[str] = []
    resp = catalog(world, secret, n=n)
    for _ in range(50):
        page = resp.json()["repositories"]
        link = resp.headers.get("Link")
        names.extend(page)
        if link is None:
            return names
        assert len(page) == n, (n, page, link)
        assert link == f'</v2/_catalog?n={n}&last={page[-1]}>; rel="next"'
        resp = requests.get(f"{world['stack'].gw_url}{link[1:link.index('>')]}",
                            auth=basic(secret), timeout=10)
        assert resp.status_code == 200, resp.text
    raise AssertionError("catalog never ended")


@pytest.mark.parametrize("role", ["reader", "ci"])
def test_catalog_lists_only_the_tokens_repositories(world: dict[str, Any], role: str) -> None:
    secret = world["tokens"][role]
    resp = catalog(world, secret)
    assert resp.json() == {"repositories": TEAM}
    assert "Link" not in resp.headers
    assert "secret" not in resp.text
    for n in (1, 2, 5):
        assert walk_catalog(world, secret, n) == TEAM
    # a `last` outside the scope reveals nothing either
    assert catalog(world, secret, last="secret/app").json() == {"repositories": TEAM}
    head = requests.head(f"{world['stack'].gw_url}/v2/_catalog?n=1", auth=basic(secret),
                         timeout=10)
    assert head.status_code == 200
    assert head.headers["Link"] == '</v2/_catalog?n=1&last=team-a/app>; rel="next"'


def test_admin_catalog_lists_everything(world: dict[str, Any]) -> None:
    assert catalog(world, procs.ADMIN_TOKEN).json() == {"repositories": ALL}
    for n in (1, 3):
        assert walk_catalog(world, procs.ADMIN_TOKEN, n) == ALL
    assert catalog(world, procs.ADMIN_TOKEN, n=0).json() == {"repositories": []}


def test_catalog_needs_a_token(world: dict[str, Any]) -> None:
    resp = requests.get(f"{world['stack'].gw_url}/v2/_catalog", timeout=10)
    assert resp.status_code == 401
