"""OCI 1.1 pieces the gateway adds to distribution 2.8: the referrers gate and index, and the
chunked-upload bookkeeping (issue 18)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import fakeredis
import pytest

from service.core import uploads
from service.domain.errors import InvalidRequest
from service.domain.gates import PromotionContext, evaluate_promotion
from service.domain.policy_model import DEFAULT_POLICY, Gate, ReferrerRequirement
from service.domain.referrers import OCI_INDEX, OCI_MANIFEST, referrer_of, referrers_index
from service.domain.schemas.policy import dump_policy, load_policy
from service.store.referrers import ReferrerIndex
from service.store.uploads import UploadSessions

SBOM = "application/spdx+json"
SIG = "application/vnd.example.sig"
D1 = "sha256:" + "1" * 64
SUBJECT = "sha256:" + "5" * 64
NOW = datetime(2026, 12, 1, tzinfo=UTC)
POLICY = replace(DEFAULT_POLICY, name="p", promotion={
    **DEFAULT_POLICY.promotion,
    "production": Gate(referrers=(ReferrerRequirement(SBOM), ReferrerRequirement(SIG)))})


def ctx(types: set[str]) -> PromotionContext:
    return PromotionContext(repository="a/b", environment="production", digest=D1,
                            source_kind="digest", source_value=D1, referrer_types=frozenset(types),
                            now=NOW)


@pytest.mark.parametrize(("attached", "missing"), [
    (set(), f"{SBOM}, {SIG}"),
    ({SBOM}, SIG),
    ({SIG, "application/other"}, SBOM),
])
def test_the_referrers_gate_names_each_missing_type(attached, missing):
    decision = evaluate_promotion(POLICY, ctx(attached))
    assert decision.rules == ["promotion.referrers"]
    assert f"needs an artifact of type {missing} attached to {D1}" in \
        decision.violations[0].message


def test_the_referrers_gate_passes_with_every_type_attached():
    assert evaluate_promotion(POLICY, ctx({SBOM, SIG, "x/y"})).allowed
    assert evaluate_promotion(DEFAULT_POLICY, replace(ctx(set()), environment="develop")).allowed


def test_the_referrers_gate_round_trips_and_rejects_a_bad_type():
    raw = {"name": "p", "repositories": ["a/*"],
           "promotion": {"production": {"referrers": [{"artifact_type": SBOM}]}}}
    policy = load_policy(raw)
    assert policy.promotion["production"].referrers == (ReferrerRequirement(SBOM),)
    assert dump_policy(policy)["promotion"]["production"] == {
        "referrers": [{"artifact_type": SBOM}]}
    for bad in ({"artifact_type": "no slash"}, {"type": SBOM}, "x"):
        with pytest.raises(InvalidRequest):
            load_policy({**raw, "promotion": {"production": {"referrers": [bad]}}})


def manifest(**extra) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": SIG, "digest": D1, "size": 2},
                       "layers": [], **extra}).encode()


def test_a_referrer_descriptor_takes_artifact_type_else_config_type():
    subject = {"mediaType": OCI_MANIFEST, "digest": SUBJECT, "size": 3}
    body = manifest(subject=subject, annotations={"k": "v"})
    assert referrer_of(body, OCI_MANIFEST, D1) == (SUBJECT, {
        "mediaType": OCI_MANIFEST, "digest": D1, "size": len(body), "artifactType": SIG,
        "annotations": {"k": "v"}})
    body = manifest(subject=subject, artifactType=SBOM)
    assert referrer_of(body, OCI_MANIFEST, D1)[1]["artifactType"] == SBOM
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [],
                        "subject": subject}).encode()
    assert referrer_of(index, OCI_INDEX, D1) == (SUBJECT, {
        "mediaType": OCI_INDEX, "digest": D1, "size": len(index)})


@pytest.mark.parametrize("body", [
    manifest(),
    manifest(subject={"digest": "../../etc"}),
    manifest(subject="sha256:" + "5" * 64),
    b'{"subject": ',
])
def test_no_subject_no_referrer(body):
    assert referrer_of(body, OCI_MANIFEST, D1) is None


def test_the_index_lists_filters_and_forgets():
    index = ReferrerIndex(fakeredis.FakeRedis(decode_responses=True))
    for digest, kind in (("sha256:" + "b" * 64, SIG), ("sha256:" + "a" * 64, SBOM)):
        index.add("a/b", SUBJECT, {"mediaType": OCI_MANIFEST, "digest": digest, "size": 1,
                                   "artifactType": kind})
    index.mark_plain("a/b", SUBJECT)
    listed = referrers_index(index.referrers("a/b", SUBJECT))
    assert [d["digest"][7] for d in listed["manifests"]] == ["a", "b"]
    assert [d["artifactType"] for d in referrers_index(index.referrers("a/b", SUBJECT),
                                                       SIG)["manifests"]] == [SIG]
    assert index.remove("a/b", "sha256:" + "b" * 64) == SUBJECT
    assert index.remove("a/b", SUBJECT) is None  # known, refers to nothing
    assert not index.known("a/b", SUBJECT)
    assert [d["artifactType"] for d in index.referrers("a/b", SUBJECT)] == [SBOM]
    assert index.referrers("c/d", SUBJECT) == []


@pytest.mark.parametrize(("header", "parsed"), [
    ("0-99", (0, 99)), ("bytes 100-199/*", (100, 199)), ("bytes=5-5", (5, 5)),
    ("9-1", None), ("-1-5", None), ("a-b", None), ("0-" + "9" * 19, None),
])
def test_content_range(header, parsed):
    assert uploads.parse_content_range(header) == parsed


@pytest.mark.parametrize(("range_", "before", "sent", "offset"), [
    ("0-0", 0, 0, 0), ("0-0", 0, 1, 1), ("0-299", 0, 300, 300), ("0-639", 300, 340, 640),
    (None, 5, 3, 8),
])
def test_offset_after_an_answer(range_, before, sent, offset):
    assert uploads.offset_after(range_, before, sent) == offset


class FakeServices:
    def __init__(self) -> None:
        self.uploads = UploadSessions(fakeredis.FakeRedis(decode_responses=True))


def test_a_chunk_is_checked_against_the_session_of_its_repository():
    svc = FakeServices()
    svc.uploads.put("u1", "a/b", 300, "S2")
    assert uploads.check_chunk(svc, "a/b", "u1", "300-399", 100)["state"] == "S2"
    refused = uploads.check_chunk(svc, "a/b", "u1", "0-299", 300)
    assert (refused.status, refused.session["offset"]) == (416, 300)
    assert uploads.check_chunk(svc, "a/b", "u1", "300-399", 99).status == 416
    assert uploads.check_chunk(svc, "a/b", "u1", "x", 1).status == 400
    assert uploads.check_chunk(svc, "a/b", "u1", None, 1) is None
    # another repository naming the same upload id learns nothing of it
    assert uploads.check_chunk(svc, "c/d", "u1", "300-399", 100) is None
    assert uploads.check_chunk(svc, "c/d", "u1", "0-299", 300) is None


def test_answers_record_and_end_sessions():
    svc = FakeServices()
    loc = "http://gw/v2/a/b/blobs/uploads/u1?_state=S1"
    uploads.record_answer(svc, "a/b", "POST", 202, {"Location": loc, "Range": "0-0"})
    assert svc.uploads.get("u1") == {"repository": "a/b", "offset": 0, "state": "S1"}
    uploads.record_answer(svc, "a/b", "PATCH", 202,
                          {"Location": loc.replace("S1", "S2"), "Range": "0-9"}, 0, 10, "u1")
    assert svc.uploads.get("u1") == {"repository": "a/b", "offset": 10, "state": "S2"}
    uploads.record_answer(svc, "a/b", "PATCH", 202,
                          {"Location": "http://gw/v2/c/d/blobs/uploads/u1?_state=X"}, 10, 1,
                          "u1")
    assert svc.uploads.get("u1")["state"] == "S2"  # a Location of another repository
    uploads.record_answer(svc, "a/b", "PUT", 201, {}, 10, 0, "u1")
    assert svc.uploads.get("u1") is None
