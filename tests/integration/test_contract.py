"""The live gateway against openapi.yaml: representative calls validated with openapi-core,
then schemathesis over every operation (no 5xx, statuses, content types and bodies as
documented)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from testkit import oci, procs
from tests.integration.conftest import Stack, start_stack

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "openapi.yaml"
WEBHOOK = "/api/v1/webhooks/registry"
REPO = "contract/app"
POLICY = {
    "name": "contract",
    "repositories": ["contract/*"],
    "promotion": {"develop": {}, "staging": {"from": "develop", "tags": ["semver"]},
                  "production": {"from": "staging", "tags": ["semver"]}},
}
# Per operation: examples from the spec's own boundaries (coverage) plus this many generated.
# Derandomized, so a CI run is reproducible; the whole module stays well under 60 s.
MAX_EXAMPLES = 8


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    return OpenAPI.from_file_path(str(SPEC))


class Checked:
    """An admin session whose every response is validated against openapi.yaml."""

    def __init__(self, stack: Stack, openapi: OpenAPI) -> None:
        self.base = stack.gw_url
        self.session = stack.admin()
        self.openapi = openapi

    def call(self, method: str, path: str, expect: int, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        resp = self.session.request(method, self.base + path, **kwargs)
        assert resp.status_code == expect, f"{method} {path}: {resp.status_code} {resp.text}"
        self.openapi.validate_response(RequestsOpenAPIRequest(resp.request),
                                       RequestsOpenAPIResponse(resp))
        if expect < 400:
            self.openapi.validate_request(RequestsOpenAPIRequest(resp.request))
        return resp


def push(stack: Stack, tmp_path: Path, name: str, ref: str) -> oci.Image:
    image = oci.simple_image(name)
    layout = oci.write_layout(tmp_path / name, {"img": image})
    result = oci.skopeo_copy(f"oci:{layout}:img", f"docker://{stack.gw}/{ref}")
    assert result.returncode == 0, result.stderr
    return image


def test_representative_responses_match_the_spec(stack: Stack, openapi: OpenAPI,
                                                 tmp_path: Path):
    api = Checked(stack, openapi)
    api.call("GET", "/healthz", 200)
    api.call("GET", "/readyz", 200)
    api.call("PUT", "/api/v1/policies/contract", 200, json=POLICY)
    api.call("GET", "/api/v1/policies/contract", 200)
    api.call("GET", "/api/v1/policies/default", 200)
    api.call("GET", "/api/v1/policies", 200)
    api.call("GET", "/api/v1/policies/no-such-policy", 404)
    api.call("PUT", "/api/v1/policies/contract", 400, json={**POLICY, "name": "other"})
    api.call("PUT", "/api/v1/policies/contract", 422, json={**POLICY, "bogus": 1})

    image = push(stack, tmp_path, "contract-1", f"{REPO}:v1.0.0")
    api.call("POST", "/api/v1/policies/evaluate", 200,
             json={"action": "push", "repository": REPO, "tag": "tmp-1"})
    api.call("POST", "/api/v1/policies/evaluate", 200,
             json={"action": "promote", "repository": REPO, "environment": "production",
                   "tag": "v1.0.0"})
    url = "/api/v1/promotions"
    api.call("POST", url, 200, json={"repository": REPO, "environment": "develop",
                                     "tag": "v1.0.0", "dry_run": True})
    first = api.call("POST", url, 201, json={"repository": REPO, "environment": "develop",
                                             "tag": "v1.0.0", "reason": "contract"},
                     headers={"Idempotency-Key": "contract-1"}).json()
    assert first["digest"] == image.digest
    api.call("POST", url, 201, json={"repository": REPO, "environment": "develop",
                                     "tag": "v1.0.0", "reason": "contract"},
             headers={"Idempotency-Key": "contract-1"})
    api.call("POST", url, 422, json={"repository": REPO, "environment": "develop",
                                     "tag": "v1.0.0", "reason": "another"},
             headers={"Idempotency-Key": "contract-1"})
    denied = api.call("POST", url, 403, json={"repository": REPO, "environment": "production",
                                              "tag": "v1.0.0"}).json()
    assert denied["code"] == "policy_denied" and denied["violations"]
    api.call("POST", url, 404, json={"repository": REPO, "environment": "develop",
                                     "tag": "v9.9.9"})
    api.call("POST", url, 409, json={"repository": REPO, "environment": "develop",
                                     "tag": "v1.0.0", "expected_digest": "sha256:" + "0" * 64})
    api.call("POST", url, 422, json={"repository": REPO, "environment": "develop"})
    push(stack, tmp_path, "contract-2", f"{REPO}:v1.1.0")
    api.call("POST", url, 201, json={"repository": REPO, "environment": "develop",
                                     "tag": "v1.1.0"})
    api.call("POST", "/api/v1/rollbacks", 201, json={"repository": REPO,
                                                     "environment": "develop"})
    api.call("GET", f"{url}?repository={REPO}&limit=2", 200)
    api.call("GET", f"{url}/{first['id']}", 200)
    api.call("GET", f"{url}/prm_missing", 404)
    api.call("GET", f"/api/v1/environments?repository={REPO}", 200)
    api.call("GET", f"/api/v1/environments?repository={REPO}&at=2020-01-01T00:00:00Z", 200)
    api.call("GET", "/api/v1/environments", 422)

    scan = api.call("POST", "/api/v1/scans", 202,
                    json={"repository": REPO, "reference": "v1.0.0"}).json()
    api.call("GET", f"/api/v1/scans?digest={scan['digest']}", 200)
    api.call("GET", f"/api/v1/scans/{scan['id']}", 200)
    api.call("GET", "/api/v1/vulndb", 200)

    api.call("GET", f"/api/v1/events?repository={REPO}", 200)
    sub = api.call("POST", "/api/v1/subscriptions", 201,
                   json={"url": "http://127.0.0.1:9/hook", "events": ["promotion.succeeded"],
                         "secret": "s" * 20}).json()
    api.call("POST", "/api/v1/subscriptions", 400,
             json={"url": "http://192.0.2.1/hook", "events": ["promotion.succeeded"],
                   "secret": "s" * 20})
    api.call("GET", "/api/v1/subscriptions", 200)
    api.call("GET", f"/api/v1/subscriptions/{sub['id']}/deliveries", 200)
    api.call("DELETE", f"/api/v1/subscriptions/{sub['id']}", 204)
    token = api.call("POST", "/api/v1/tokens", 201,
                     json={"name": "contract-ci", "role": "ci"}).json()
    api.call("GET", "/api/v1/tokens", 200)
    api.call("DELETE", f"/api/v1/tokens/{token['id']}", 204)
    api.call("GET", "/api/v1/audit?limit=5", 200)

    anonymous = requests.get(f"{stack.gw_url}/api/v1/policies", timeout=10)
    assert anonymous.status_code == 401
    openapi.validate_response(RequestsOpenAPIRequest(anonymous.request),
                              RequestsOpenAPIResponse(anonymous))
    hook = requests.post(f"{stack.gw_url}{WEBHOOK}", json={"events": []}, timeout=10,
                         headers={"Authorization": f"Bearer {procs.WEBHOOK_TOKEN}"})
    assert hook.status_code == 200
    openapi.validate_response(RequestsOpenAPIRequest(hook.request),
                              RequestsOpenAPIResponse(hook))


# -- schemathesis ---------------------------------------------------------------------------
schema = schemathesis.openapi.from_path(SPEC)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: fuzzing stores odd policies, tokens and subscriptions."""
    stack = start_stack(tmp_path_factory.mktemp("fuzzed"), worker=False,
                        TAGWARDEN_RATE_LIMIT="off")
    yield stack
    stack.stop()


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_every_operation_conforms(case: schemathesis.Case, fuzzed: Stack):
    token = procs.WEBHOOK_TOKEN if case.path == WEBHOOK else procs.ADMIN_TOKEN
    case.call_and_validate(
        base_url=fuzzed.gw_url, headers={"Authorization": f"Bearer {token}"}, timeout=30,
        checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                response_schema_conformance],
    )
