"""openapi.yaml: committed = generated, valid OpenAPI 3.1, every route in it, errors documented."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import pytest
import yaml
from flask import Flask
from openapi_spec_validator import validate

from service.config import Settings
from service.http.app import create_app, openapi_yaml
from service.http.openapi import ERROR_RESPONSES

ROOT = Path(__file__).resolve().parents[2]
SPEC_FILE = ROOT / "openapi.yaml"
OPERATIONS = ("get", "put", "post", "delete", "patch")
WEBHOOK = "/api/v1/webhooks/registry"


@pytest.fixture(scope="module")
def app() -> Flask:
    return create_app(Settings())


@pytest.fixture(scope="module")
def committed() -> str:
    assert SPEC_FILE.exists(), "openapi.yaml is missing: run `tagwarden openapi`"
    return SPEC_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def spec(committed: str) -> dict:
    return yaml.safe_load(committed)


def operations(spec: dict):
    for path, item in spec["paths"].items():
        for method in OPERATIONS:
            if method in item:
                yield path, method, item[method]


def test_committed_spec_is_the_generated_one(committed: str):
    generated = openapi_yaml()
    if generated != committed:
        diff = "".join(list(difflib.unified_diff(
            committed.splitlines(keepends=True), generated.splitlines(keepends=True),
            "openapi.yaml (committed)", "openapi.yaml (generated)"))[:60])
        pytest.fail("openapi.yaml is out of date with the routes and schemas: run "
                    f"`tagwarden openapi` and commit the result\n{diff}")


def test_spec_is_valid_openapi_3_1(spec: dict):
    assert spec["openapi"] == "3.1.0"
    validate(spec)


def test_every_api_route_is_documented(app: Flask, spec: dict):
    documented = {(path, method) for path, method, _ in operations(spec)}
    missing = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = rule.rule.replace("<string:", "{").replace("<", "{").replace(">", "}")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if (path, method.lower()) not in documented:
                missing.append(f"{method} {path}")
    assert missing == []
    assert ("/healthz", "get") in documented and ("/readyz", "get") in documented


def test_operation_ids_are_unique(spec: dict):
    ids = [op["operationId"] for _, _, op in operations(spec)]
    assert len(ids) == len(set(ids)) and all(ids)


def test_every_api_error_uses_the_error_envelope(spec: dict):
    responses = spec["components"]["responses"]
    assert spec["components"]["schemas"]["Error"]["required"] == ["code", "message"]
    for path, method, op in operations(spec):
        if not path.startswith("/api/v1/"):
            continue
        statuses = {code for code in op["responses"] if code != "default"}
        expected = {"400", "401", "413", "415", "503"} if path == WEBHOOK else {
            "401", "403", "429", "503"}
        assert expected <= statuses, f"{method} {path}"
        assert "default" in op["responses"], f"{method} {path}"
        for code, response in op["responses"].items():
            if code != "default" and int(code) < 400:
                continue
            name = response["$ref"].rsplit("/", 1)[-1]
            schema = responses[name]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, f"{method} {path} {code}"
            if code != "default":
                assert ERROR_RESPONSES[int(code)][0] == name


def test_security_schemes(spec: dict):
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http",
                                     "scheme": "bearer"}
    assert schemes["webhookToken"]["type"] == "http"
    assert spec["security"] == [{"bearerAuth": []}]
    assert spec["paths"][WEBHOOK]["post"]["security"] == [{"webhookToken": []}]
    assert spec["paths"]["/healthz"]["get"]["security"] == []
    assert "HTTP Basic" in spec["info"]["description"] and "/v2/" in spec["info"]["description"]


def test_promotion_documents_idempotency_key_and_dry_run(spec: dict):
    op = spec["paths"]["/api/v1/promotions"]["post"]
    assert [p["name"] for p in op["parameters"] if p["in"] == "header"] == ["Idempotency-Key"]
    assert {"200", "201", "403", "409", "422"} <= set(op["responses"])


def test_served_spec_is_the_committed_one(app: Flask, committed: str, spec: dict):
    client = app.test_client()
    resp = client.get("/openapi.yaml")
    assert resp.status_code == 200
    assert resp.mimetype == "application/yaml"
    assert resp.get_data(as_text=True) == committed
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    assert json.loads(resp.get_data(as_text=True)) == spec
