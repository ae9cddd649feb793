import copy
import json
from datetime import UTC, datetime

import pytest

from service.domain.errors import InvalidRequest
from service.domain.policy import (
    DEFAULT_POLICY,
    FreezeWindow,
    Gate,
    IgnoreEntry,
    PushRules,
    ScanGate,
)
from service.domain.schemas.policy import (
    PolicySchema,
    dump_policy,
    flatten_errors,
    load_policy,
    load_policy_file,
)

pytestmark = pytest.mark.unit

EXAMPLE = {
    "name": "team-a",
    "repositories": ["team-a/*"],
    "environments": ["develop", "staging", "production"],
    "push": {
        "allow": ["semver", "git-sha", "latest", "regex:^pr-[0-9]+$"],
        "deny": ["regex:^tmp-"],
        "immutable": ["semver", "git-sha"],
    },
    "promotion": {
        "develop": {},
        "staging": {"from": "develop", "tags": ["semver", "git-sha"]},
        "production": {
            "from": "staging",
            "tags": ["semver"],
            "scan": {
                "required": True,
                "max_severity": "high",
                "ignore": [
                    {
                        "id": "CVE-2024-0001",
                        "until": "2027-01-31T00:00:00Z",
                        "reason": "not reachable",
                    }
                ],
            },
            "soak": "30m",
            "freeze": [{"start": "2026-12-24T00:00:00Z", "end": "2026-12-27T00:00:00Z"}],
        },
    },
    "scan_on_push": True,
    "on_drift": "restore",
}


def example(**changes):
    """A deep copy of EXAMPLE with dotted-path changes applied (value None deletes)."""
    data = copy.deepcopy(EXAMPLE)
    for path, value in changes.items():
        *parents, last = path.split("__")
        target = data
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if isinstance(target, list):
            target[int(last)] = value
        elif value is None:
            del target[last]
        else:
            target[last] = value
    return data


def errors_of(data):
    with pytest.raises(InvalidRequest) as info:
        load_policy(data)
    assert info.value.message == "invalid policy"
    return info.value.errors


def test_example_loads_into_the_model():
    policy = load_policy(example())
    assert policy.name == "team-a"
    assert policy.repositories == ("team-a/*",)
    assert policy.push == PushRules(
        allow=("semver", "git-sha", "latest", "regex:^pr-[0-9]+$"),
        deny=("regex:^tmp-",),
        immutable=("semver", "git-sha"),
    )
    assert list(policy.promotion) == ["develop", "staging", "production"]
    assert policy.promotion["staging"] == Gate(from_env="develop", tags=("semver", "git-sha"))
    assert policy.promotion["production"] == Gate(
        from_env="staging",
        tags=("semver",),
        scan=ScanGate(
            required=True,
            max_severity="high",
            ignore=(
                IgnoreEntry("CVE-2024-0001", datetime(2027, 1, 31, tzinfo=UTC), "not reachable"),
            ),
        ),
        soak_seconds=1800,
        freeze=(
            FreezeWindow(datetime(2026, 12, 24, tzinfo=UTC), datetime(2026, 12, 27, tzinfo=UTC)),
        ),
    )
    assert (policy.scan_on_push, policy.on_drift) == (True, "restore")


def test_round_trip_dump_load():
    assert dump_policy(load_policy(example())) == EXAMPLE
    assert load_policy(dump_policy(load_policy(example()))) == load_policy(example())


def test_default_policy_dumps_to_the_documented_json():
    dumped = dump_policy(DEFAULT_POLICY)
    assert dumped == {
        "name": "default",
        "repositories": ["*"],
        "environments": ["develop", "staging", "production"],
        "push": {
            "allow": ["semver", "git-sha", "latest", "other"],
            "deny": [],
            "immutable": ["semver", "git-sha"],
        },
        "promotion": {
            "develop": {},
            "staging": {"from": "develop", "tags": ["semver", "git-sha"]},
            "production": {
                "from": "staging",
                "tags": ["semver", "git-sha"],
                "scan": {"required": True, "max_severity": "high"},
            },
        },
        "scan_on_push": True,
        "on_drift": "restore",
    }
    assert load_policy(dumped) == DEFAULT_POLICY
    assert PolicySchema().dump(DEFAULT_POLICY) == dumped


def test_minimal_policy_takes_defaults():
    policy = load_policy({"name": "min", "repositories": ["min/*"]})
    assert policy.environments == DEFAULT_POLICY.environments
    assert policy.push == DEFAULT_POLICY.push
    assert policy.promotion == {env: Gate() for env in DEFAULT_POLICY.environments}
    assert (policy.scan_on_push, policy.on_drift) == (True, "restore")


def test_durations_and_times_dump_canonically():
    data = example(
        promotion__production__soak="90m",
        promotion__production__freeze=[
            {"start": "2026-12-24T01:00:00+01:00", "end": "2026-12-27t00:00:00.5z"}
        ],
    )
    dumped = dump_policy(load_policy(data))["promotion"]["production"]
    assert dumped["soak"] == "1h30m"
    assert dumped["freeze"] == [
        {"start": "2026-12-24T00:00:00Z", "end": "2026-12-27T00:00:00.500Z"}
    ]


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"name": "Team-A"}, "name", "policy name"),
        ({"name": "-team"}, "name", "policy name"),
        ({"name": "a" * 64}, "name", "policy name"),
        ({"name": "team\n"}, "name", "policy name"),
        ({"name": None}, "name", "Missing data"),
        ({"repositories": []}, "repositories", "minimum length 1"),
        ({"repositories": None}, "repositories", "Missing data"),
        ({"repositories": ["Team/*"]}, "repositories.0", "repository glob"),
        ({"environments": ["develop", "staging", "develop"]}, "environments", "duplicate"),
        ({"environments": []}, "environments", "between 1 and 20"),
        ({"environments": ["Prod"]}, "environments.0", "environment name"),
        ({"environments": ["latest"]}, "environments.0", "is a latest tag"),
        ({"environments": ["1.0.0"]}, "environments.0", "is a semver tag"),
        ({"push__allow": ["semver", "releases"]}, "push.allow.1", "unknown tag class 'releases'"),
        ({"push__allow": ["environment"]}, "push.allow.0", "can never be pushed"),
        ({"push__deny": ["regex:["]}, "push.deny.0", "invalid regex"),
        ({"push__deny": ["regex:(a)\\1"]}, "push.deny.0", "invalid regex '(a)\\\\1'"),
        ({"push__immutable": ["regex:^(?!tmp)"]}, "push.immutable.0",
         "invalid regex '^(?!tmp)'"),
        ({"push__immutable": ["regex:" + "x" * 300]}, "push.immutable.0", "longer than 256"),
        ({"push__extra": []}, "push.extra", "Unknown field"),
        ({"promotion__qa": {}}, "promotion.qa", "unknown environment 'qa'"),
        ({"promotion__staging__tags": ["gitsha"]}, "promotion.staging.tags.0", "unknown tag class"),
        ({"promotion__production__from": "qa"}, "promotion.production.from", "unknown environment"),
        ({"promotion__staging__from": "production"}, "promotion.staging.from", "must come before"),
        ({"promotion__staging__from": "staging"}, "promotion.staging.from", "must come before"),
        ({"promotion__develop__soak": "1h"}, "promotion.develop.soak", "set 'from'"),
        ({"promotion__production__soak": "30"}, "promotion.production.soak", "invalid duration"),
        ({"promotion__production__soak": 30}, "promotion.production.soak", "duration string"),
        ({"promotion__production__gate": 1}, "promotion.production.gate", "Unknown field"),
        (
            {"promotion__production__scan__max_severity": "severe"},
            "promotion.production.scan.max_severity",
            "Must be one of: critical, high, medium, low, unknown",
        ),
        (
            {"promotion__production__scan__required": "yes"},
            "promotion.production.scan.required",
            "true or false",
        ),
        ({"promotion__production__scan__x": 1}, "promotion.production.scan.x", "Unknown field"),
        (
            {"promotion__production__scan__ignore": [{"until": "2027-01-01T00:00:00Z"}]},
            "promotion.production.scan.ignore.0.id",
            "Missing data",
        ),
        (
            {"promotion__production__scan__ignore": [{"id": "X", "until": "2027-01-01"}]},
            "promotion.production.scan.ignore.0.until",
            "RFC 3339",
        ),
        (
            {
                "promotion__production__freeze": [
                    {"start": "2026-12-24T00:00:00Z", "end": "2026-12-24T00:00:00Z"}
                ]
            },
            "promotion.production.freeze.0.end",
            "end must be after start",
        ),
        (
            {
                "promotion__production__freeze": [
                    {"start": "2026-12-25T00:00:00Z", "end": "2026-12-24T00:00:00Z"}
                ]
            },
            "promotion.production.freeze.0.end",
            "end must be after start",
        ),
        (
            {
                "promotion__production__freeze": [
                    {"start": "2026-12-24T00:00:00", "end": "2026-12-27T00:00:00Z"}
                ]
            },
            "promotion.production.freeze.0.start",
            "with a timezone",
        ),
        (
            {
                "promotion__production__freeze": [
                    {"start": "2026-02-30T00:00:00Z", "end": "2026-12-27T00:00:00Z"}
                ]
            },
            "promotion.production.freeze.0.start",
            "not a valid date-time",
        ),
        (
            {"promotion__production__freeze": [{"start": "2026-12-24T00:00:00Z"}]},
            "promotion.production.freeze.0.end",
            "Missing data",
        ),
        ({"promotion": []}, "promotion", "keyed by environment"),
        ({"on_drift": "ignore"}, "on_drift", "Must be one of: restore, record"),
        ({"scan_on_push": 1}, "scan_on_push", "true or false"),
        ({"owner": "x"}, "owner", "Unknown field"),
    ],
)
def test_malformed_policy_names_the_field(changes, field, fragment):
    errors = errors_of(example(**changes))
    assert field in errors, errors
    assert any(fragment in message for message in errors[field]), errors[field]


def test_not_an_object():
    assert errors_of(["x"]) == {"_schema": ["Invalid input type."]}


def test_several_errors_are_reported_together():
    errors = errors_of(
        example(
            name="BAD",
            promotion__qa={},
            promotion__production__scan__max_severity="severe",
            promotion__production__from="qa",
        )
    )
    assert set(errors) == {
        "name",
        "promotion.qa",
        "promotion.production.from",
        "promotion.production.scan.max_severity",
    }


@pytest.mark.parametrize(
    ("messages", "flat"),
    [
        ({"a": ["x"]}, {"a": ["x"]}),
        ({"a": {"b": {0: ["x", "y"]}}}, {"a.b.0": ["x", "y"]}),
        ({"a": {"_schema": ["x"]}, "_schema": ["y"]}, {"a": ["x"], "_schema": ["y"]}),
        (["x"], {"_schema": ["x"]}),
    ],
)
def test_flatten_errors(messages, flat):
    assert flatten_errors(messages) == flat


# --- files --------------------------------------------------------------------------------


def test_load_policy_file_yaml_list(tmp_path):
    path = tmp_path / "policies.yaml"
    path.write_text(
        "- name: team-a\n  repositories: ['team-a/*']\n"
        "- name: team-b\n  repositories: ['team-b/*']\n  on_drift: record\n"
    )
    policies = load_policy_file(path)
    assert [(p.name, p.on_drift) for p in policies] == [("team-a", "restore"), ("team-b", "record")]


def test_load_policy_file_json_single_and_wrapped(tmp_path):
    single = tmp_path / "one.json"
    single.write_text(json.dumps(EXAMPLE))
    assert load_policy_file(single) == [load_policy(example())]
    wrapped = tmp_path / "many.yml"
    wrapped.write_text(json.dumps({"policies": [EXAMPLE]}))
    assert load_policy_file(str(wrapped)) == [load_policy(example())]


def test_load_policy_file_errors_name_file_and_index(tmp_path):
    path = tmp_path / "policies.yaml"
    path.write_text(
        "- name: ok\n  repositories: ['ok/*']\n"
        "- name: bad\n  repositories: []\n  on_drift: maybe\n"
        "- name: ok\n  repositories: ['ok2/*']\n"
    )
    with pytest.raises(InvalidRequest) as info:
        load_policy_file(path)
    assert set(info.value.errors) == {
        "policies[1].repositories",
        "policies[1].on_drift",
        "policies[2].name",
    }
    assert info.value.errors["policies[2].name"] == [
        "duplicate policy name 'ok' (also policies[0])"
    ]
    assert info.value.message.startswith(f"invalid policy file {path}: policies[1].repositories")


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("broken.yaml", "- name: [unclosed\n", "cannot read policy file"),
        ("broken.json", "{", "cannot read policy file"),
    ],
)
def test_load_policy_file_unreadable(tmp_path, name, text, fragment):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InvalidRequest) as info:
        load_policy_file(path)
    assert info.value.message.startswith(f"{fragment} {path}")


@pytest.mark.parametrize("text", ["", "[]\n", "# nothing yet\n"])
def test_load_policy_file_empty(tmp_path, text):
    path = tmp_path / "policies.yaml"
    path.write_text(text)
    assert load_policy_file(path) == []


def test_load_policy_file_missing(tmp_path):
    with pytest.raises(InvalidRequest, match="cannot read policy file"):
        load_policy_file(tmp_path / "absent.yaml")
