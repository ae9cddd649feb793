"""Manifest structure limits and the per-process manifest memory budget (issue 14)."""

from __future__ import annotations

import json
import threading

import pytest

from service.registry.limits import (
    MAX_CONTAINERS,
    MAX_ELEMENTS,
    ManifestTooComplex,
    MemoryBudget,
    check_structure,
    parse_manifest,
)

OCI = "application/vnd.oci.image.manifest.v1+json"
LAYER = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 1,
         "digest": "sha256:" + "a" * 64, "annotations": {"k": "v"}}


def big_real_manifest(layers: int) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI, "config": LAYER,
                       "layers": [LAYER] * layers}).encode()


@pytest.mark.parametrize("body, refused", [
    (big_real_manifest(4000), None),  # far beyond any real image, still accepted
    (b'{"layers":[' + b",".join([b"{}"] * (MAX_CONTAINERS + 1)) + b"]}", "objects and arrays"),
    (b'{"a":' + b"[" * (MAX_CONTAINERS + 1) + b"]" * (MAX_CONTAINERS + 1) + b"}",
     "objects and arrays"),
    (b"[" + b",".join([b"0"] * (MAX_ELEMENTS + 2)) + b"]", "elements"),
    # braces and commas inside strings are not structure
    (json.dumps({"annotations": {"x": "{[," * (MAX_ELEMENTS + 10)}}).encode(), None),
    # an annotation holding JSON text (escaped quotes) is not structure either
    (json.dumps({"annotations": {"sbom": json.dumps([{"a": [i]} for i in range(20000)])}}
                ).encode(), None),
    # annotations full of tiny objects: too many strings to look at, the upper bound stands
    (b'{"annotations":{' + b",".join(b'"%x":{}' % i for i in range(MAX_CONTAINERS + 1))
     + b"}}", "objects and arrays"),
    # an unterminated string does not hide the objects after it
    (b'{"a":"' + b"{}," * (MAX_CONTAINERS + 1), "objects and arrays"),
])
def test_check_structure(body: bytes, refused: str | None) -> None:
    if refused is None:
        check_structure(body)
    else:
        with pytest.raises(ManifestTooComplex, match=refused) as info:
            check_structure(body)
        assert "limit is" in str(info.value)


def test_parse_manifest_is_json_loads_within_the_limits() -> None:
    body = big_real_manifest(3)
    assert parse_manifest(body) == json.loads(body)
    with pytest.raises(ValueError):
        parse_manifest(b"[" + b"{}," * MAX_CONTAINERS + b"{}]")


def test_memory_budget_waits_then_refuses() -> None:
    budget = MemoryBudget(100)
    first = budget.acquire(60, timeout=0)
    assert first == 60
    assert budget.acquire(60, timeout=0.05) is None  # no room, bounded wait
    assert budget.acquire(1000, timeout=0) is None  # trimmed to the capacity, still no room
    got: list[int | None] = []
    waiter = threading.Thread(target=lambda: got.append(budget.acquire(60, timeout=5)))
    waiter.start()
    budget.release(first)
    waiter.join()
    assert got == [60] and budget.used == 60
