"""The policy JSON shape of API.md: validation, loading into `Policy`, dumping back."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_dump,
    post_load,
    validate,
    validates_schema,
)

from service.domain.approvals import parse_approver
from service.domain.durations import format_duration, format_time, parse_duration
from service.domain.errors import InvalidRequest
from service.domain.policy_model import (
    DEFAULT_POLICY,
    HOTFIX_BYPASSABLE,
    ON_DRIFT,
    SEVERITIES,
    ApprovalGate,
    FreezeWindow,
    Gate,
    HotfixGate,
    IgnoreEntry,
    Policy,
    PushRules,
    ReferrerRequirement,
    Retention,
    ScanGate,
    VerifiedGate,
)
from service.domain.referrers import MEDIA_TYPE_RE
from service.domain.schemas.base import flatten_errors, utc_representable
from service.domain.tags import ENVIRONMENT, LATEST, is_git_sha, is_semver, validate_spec

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_NAME_RULE = "1-63 of a-z 0-9 . _ - starting with a letter or digit"
_GLOB_RE = re.compile(r"[a-z0-9._/*?\[\]!-]{1,255}")
_RFC3339_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)

__all__ = [
    "ApprovalGateSchema",
    "VerifiedGateSchema",
    "FreezeWindowSchema",
    "GateSchema",
    "IgnoreSchema",
    "PolicySchema",
    "PushRulesSchema",
    "ReferrerRequirementSchema",
    "RetentionSchema",
    "ScanGateSchema",
    "dump_policy",
    "flatten_errors",
    "load_policy",
    "load_policy_file",
]


# --- fields and validators ---------------------------------------------------------------


class RFC3339DateTime(fields.DateTime):
    """An RFC 3339 timestamp with a timezone, loaded as an aware datetime."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str) or not _RFC3339_RE.fullmatch(value):
            raise ValidationError(
                "must be an RFC 3339 date-time with a timezone, e.g. 2026-12-24T00:00:00Z"
            )
        try:
            moment = datetime.fromisoformat(value.upper())
        except ValueError:
            raise ValidationError(f"not a valid date-time: {value}") from None
        utc_representable(moment)
        return moment

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else format_time(value)


class StrictBoolean(fields.Boolean):
    """A JSON boolean only (marshmallow's Boolean also takes 1, "yes", "on")."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError("must be true or false")
        return value


class Duration(fields.String):
    """A duration like `30m` or `1h30m`, loaded as seconds (documented as a string)."""

    def _deserialize(  # type: ignore[override]  # loads a string as seconds
            self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if not isinstance(value, str):
            raise ValidationError("must be a duration string such as 30m, 2h, 1d or 1h30m")
        try:
            return parse_duration(value)
        except InvalidRequest as exc:
            raise ValidationError(exc.message) from None

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else format_duration(value)


def _check_spec(spec: str) -> None:
    try:
        validate_spec(spec)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def _check_allow_spec(spec: str) -> None:
    _check_spec(spec)
    if spec == ENVIRONMENT:
        raise ValidationError("environment tags can never be pushed; remove 'environment'")


def _check_glob(pattern: str) -> None:
    if not _GLOB_RE.fullmatch(pattern):
        raise ValidationError(
            "a repository glob is lowercase name characters and the wildcards * ? [...]"
        )


def _check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise ValidationError(f"a policy name is {_NAME_RULE}")


def _check_environment(name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise ValidationError(f"environment name {name!r} must be {_NAME_RULE}")
    clash = "latest" if name == LATEST else "semver" if is_semver(name) else None
    clash = clash or ("git-sha" if is_git_sha(name) else None)
    if clash:
        raise ValidationError(f"environment name {name!r} is a {clash} tag; pick another name")


def _unique(values: list[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValidationError(f"duplicate environment {value!r}")
        seen.add(value)


def _specs(check: Any = _check_spec, **kwargs: Any) -> fields.List:
    return fields.List(fields.String(validate=check), **kwargs)


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class GateMap(fields.Dict):
    """`promotion`: environment name -> gate; errors keyed by environment, not `value`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(keys=fields.String(), values=fields.Nested(GateSchema), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict:
        if not isinstance(value, Mapping):
            raise ValidationError("must be an object keyed by environment name")
        gates: dict[str, Gate] = {}
        errors: dict[str, Any] = {}
        for env, raw in value.items():
            try:
                gates[str(env)] = GateSchema().load(raw if raw is not None else {})
            except ValidationError as exc:
                errors[str(env)] = exc.messages
        if errors:
            raise ValidationError(errors)
        return gates

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> dict | None:
        if value is None:
            return None
        return {env: GateSchema().dump(gate) for env, gate in value.items()}


# --- schemas -----------------------------------------------------------------------------


class IgnoreSchema(_Strict):
    id = fields.String(required=True, validate=validate.Length(1, 100))
    until = RFC3339DateTime(load_default=None)
    reason = fields.String(load_default="", validate=validate.Length(max=500))

    @post_load
    def make(self, data: dict, **kwargs: Any) -> IgnoreEntry:
        return IgnoreEntry(**data)

    @post_dump
    def prune(self, data: dict, **kwargs: Any) -> dict:
        return {k: v for k, v in data.items() if v not in (None, "")}


class ScanGateSchema(_Strict):
    required = StrictBoolean(load_default=True)
    max_severity = fields.String(load_default=None, validate=validate.OneOf(SEVERITIES))
    ignore = fields.List(fields.Nested(IgnoreSchema), load_default=list)

    @post_load
    def make(self, data: dict, **kwargs: Any) -> ScanGate:
        return ScanGate(
            required=data["required"],
            max_severity=data["max_severity"],
            ignore=tuple(data["ignore"]),
        )

    @post_dump
    def prune(self, data: dict, **kwargs: Any) -> dict:
        return {k: v for k, v in data.items() if v not in (None, [])}


class FreezeWindowSchema(_Strict):
    start = RFC3339DateTime(required=True)
    end = RFC3339DateTime(required=True)

    @validates_schema
    def check_order(self, data: dict, **kwargs: Any) -> None:
        if data["end"] <= data["start"]:
            raise ValidationError("end must be after start", "end")

    @post_load
    def make(self, data: dict, **kwargs: Any) -> FreezeWindow:
        return FreezeWindow(**data)


class ReferrerRequirementSchema(_Strict):
    artifact_type = fields.String(
        required=True,
        validate=validate.Regexp(MEDIA_TYPE_RE, error="must be a media type such as "
                                 "application/spdx+json"))

    @post_load
    def make(self, data: dict, **kwargs: Any) -> ReferrerRequirement:
        return ReferrerRequirement(**data)


def _check_approver(spec: str) -> None:
    try:
        parse_approver(spec)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def _check_check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise ValidationError(f"check name {name!r} must be {_NAME_RULE}")


class ApprovalGateSchema(_Strict):
    required = fields.Integer(required=True, strict=True, validate=validate.Range(1, 20))
    approvers = fields.List(fields.String(validate=_check_approver), required=True,
                            validate=validate.Length(1, 100))
    requester_may_approve = StrictBoolean(load_default=False)
    valid_for = Duration(attribute="valid_for_seconds", load_default=24 * 3600,
                         validate=validate.Range(1, 366 * 86400,
                                                 error="must be between 1s and 366d"))

    @validates_schema(skip_on_field_errors=True)
    def check_reachable(self, data: dict, **kwargs: Any) -> None:
        # only named tokens: fewer names than required approvals can never be satisfied
        names = {a for a in data["approvers"] if a.startswith("token:")}
        if len(names) == len(data["approvers"]) and len(names) < data["required"]:
            raise ValidationError(f"{data['required']} approvals required but only "
                                  f"{len(names)} token(s) may approve", "required")

    @post_load
    def make(self, data: dict, **kwargs: Any) -> ApprovalGate:
        return ApprovalGate(required=data["required"], approvers=tuple(data["approvers"]),
                            requester_may_approve=data["requester_may_approve"],
                            valid_for_seconds=data["valid_for_seconds"])


class VerifiedGateSchema(_Strict):
    in_env = fields.String(data_key="in", required=True)
    checks = fields.List(fields.String(validate=_check_check_name), required=True,
                         validate=validate.Length(1, 50))

    @post_load
    def make(self, data: dict, **kwargs: Any) -> VerifiedGate:
        return VerifiedGate(in_env=data["in_env"], checks=tuple(dict.fromkeys(data["checks"])))


def _check_bypass(name: str) -> None:
    if name in ("latest", "scan", "severity", "scan_required"):
        raise ValidationError(f"{name!r} is never bypassed, not even by a hotfix")
    if name not in HOTFIX_BYPASSABLE:
        raise ValidationError(f"{name!r} is not a gate; a hotfix may bypass "
                              f"{', '.join(HOTFIX_BYPASSABLE)}")


class HotfixGateSchema(_Strict):
    bypass = fields.List(fields.String(validate=_check_bypass), required=True,
                         validate=validate.Length(1, len(HOTFIX_BYPASSABLE)))
    approvals = fields.Nested(ApprovalGateSchema, required=True)

    @post_load
    def make(self, data: dict, **kwargs: Any) -> HotfixGate:
        return HotfixGate(bypass=tuple(dict.fromkeys(data["bypass"])),
                          approvals=data["approvals"])


class GateSchema(_Strict):
    from_env = fields.String(data_key="from", load_default=None)
    tags = _specs(load_default=list)
    scan = fields.Nested(ScanGateSchema, load_default=None, allow_none=True)
    soak = Duration(attribute="soak_seconds", load_default=0)
    freeze = fields.List(fields.Nested(FreezeWindowSchema), load_default=list)
    referrers = fields.List(fields.Nested(ReferrerRequirementSchema), load_default=list,
                            validate=validate.Length(max=20))
    approvals = fields.Nested(ApprovalGateSchema, load_default=None, allow_none=True)
    verified = fields.Nested(VerifiedGateSchema, load_default=None, allow_none=True)
    hotfix = fields.Nested(HotfixGateSchema, load_default=None, allow_none=True)

    @post_load
    def make(self, data: dict, **kwargs: Any) -> Gate:
        return Gate(
            from_env=data["from_env"],
            tags=tuple(data["tags"]),
            scan=data["scan"],
            soak_seconds=data["soak_seconds"],
            freeze=tuple(data["freeze"]),
            referrers=tuple(data["referrers"]),
            approvals=data["approvals"],
            verified=data["verified"],
            hotfix=data["hotfix"],
        )

    @post_dump
    def prune(self, data: dict, **kwargs: Any) -> dict:
        return {k: v for k, v in data.items() if v not in (None, [], "0s")}


class PushRulesSchema(_Strict):
    allow = _specs(_check_allow_spec, load_default=lambda: list(DEFAULT_POLICY.push.allow))
    deny = _specs(load_default=list)
    immutable = _specs(load_default=lambda: list(DEFAULT_POLICY.push.immutable))

    @post_load
    def make(self, data: dict, **kwargs: Any) -> PushRules:
        return PushRules(**{k: tuple(v) for k, v in data.items()})


def _check_cron(expression: str) -> None:
    from service.domain.retention import valid_schedule

    if not valid_schedule(expression):
        raise ValidationError("a cron expression of 5 fields (minute hour day month weekday), "
                              "e.g. '0 3 * * *'")


class RetentionSchema(_Strict):
    keep_per_environment = fields.Integer(load_default=5, strict=True,
                                          validate=validate.Range(min=0, max=1000))
    keep_releases = fields.Integer(load_default=20, strict=True,
                                   validate=validate.Range(min=0, max=100_000))
    keep_newer_than = Duration(load_default=14 * 86400)
    delete_untagged = StrictBoolean(load_default=True)
    schedule = fields.String(load_default=None, allow_none=True,
                             validate=[validate.Length(max=100), _check_cron])

    @post_load
    def make(self, data: dict, **kwargs: Any) -> Retention:
        return Retention(**data)

    @post_dump
    def prune(self, data: dict, **kwargs: Any) -> dict:
        return {k: v for k, v in data.items() if v is not None}


class PolicySchema(_Strict):
    name = fields.String(required=True, validate=_check_name)
    repositories = fields.List(
        fields.String(validate=_check_glob), required=True, validate=validate.Length(min=1)
    )
    environments = fields.List(
        fields.String(validate=_check_environment),
        load_default=lambda: list(DEFAULT_POLICY.environments),
        validate=[validate.Length(min=1, max=20), _unique],
    )
    push = fields.Nested(PushRulesSchema, load_default=PushRules)
    promotion = GateMap(load_default=dict)
    scan_on_push = StrictBoolean(load_default=True)
    on_drift = fields.String(load_default="restore", validate=validate.OneOf(ON_DRIFT))
    retention = fields.Nested(RetentionSchema, load_default=None, allow_none=True)

    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def check_promotion(self, data: dict, original: Any, **kwargs: Any) -> None:
        # Reads the raw gates so stage-order errors show up next to the gates' own errors.
        envs = data.get("environments")
        gates = original.get("promotion") if isinstance(original, Mapping) else None
        if not isinstance(envs, list) or not isinstance(gates, Mapping):
            return  # field errors already say what is wrong
        errors: dict[str, Any] = {}
        for env, gate in gates.items():
            if env not in envs:
                errors[str(env)] = [f"unknown environment {env!r}: not in environments"]
            elif isinstance(gate, Mapping) and _gate_order_errors(env, gate, envs):
                errors[env] = _gate_order_errors(env, gate, envs)
        if errors:
            raise ValidationError({"promotion": errors})

    @post_load
    def make(self, data: dict, **kwargs: Any) -> Policy:
        envs = tuple(data["environments"])
        return Policy(
            name=data["name"],
            repositories=tuple(data["repositories"]),
            environments=envs,
            push=data["push"],
            promotion={env: data["promotion"].get(env, Gate()) for env in envs},
            scan_on_push=data["scan_on_push"],
            on_drift=data["on_drift"],
            retention=data["retention"],
        )

    @post_dump
    def prune_retention(self, data: dict, **kwargs: Any) -> dict:
        if data.get("retention") is None:
            data.pop("retention", None)
        return data


def _gate_order_errors(env: str, gate: Mapping, envs: list[str]) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    source = gate.get("from")
    if isinstance(source, str):
        if source not in envs:
            errors["from"] = [f"unknown environment {source!r}: not in environments"]
        elif envs.index(source) >= envs.index(env):
            errors["from"] = [f"{source!r} must come before {env!r} in environments"]
    if gate.get("soak") is not None and source is None:
        errors["soak"] = ["soak is measured in the 'from' environment: set 'from' too"]
    verified = gate.get("verified")
    where = verified.get("in") if isinstance(verified, Mapping) else None
    if isinstance(where, str) and where not in envs:
        errors["verified.in"] = [f"unknown environment {where!r}: not in environments"]
    return errors


# --- helpers -----------------------------------------------------------------------------


def load_policy(data: Any) -> Policy:
    """Validate API.md's policy JSON into a Policy; InvalidRequest naming each bad field."""
    try:
        policy: Policy = PolicySchema().load(data)
        return policy
    except ValidationError as exc:
        raise InvalidRequest("invalid policy", errors=flatten_errors(exc.messages)) from None


def dump_policy(policy: Policy) -> dict[str, Any]:
    """The API.md JSON shape of a policy (durations in canonical form, e.g. `1h30m`)."""
    dumped: dict[str, Any] = PolicySchema().dump(policy)
    return dumped


def load_policy_file(path: str | Path) -> list[Policy]:
    """Policies from a YAML/JSON file: one policy, a list, `{"policies": [...]}` or empty."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise InvalidRequest(f"cannot read policy file {path}: {exc}") from None
    if isinstance(raw, Mapping) and set(raw) == {"policies"}:
        raw = raw["policies"]
    items = [] if raw is None else raw if isinstance(raw, list) else [raw]
    policies: list[Policy] = []
    errors: dict[str, list[str]] = {}
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        try:
            policy = PolicySchema().load(item)
        except ValidationError as exc:
            for field, texts in flatten_errors(exc.messages).items():
                errors[f"policies[{index}].{field}"] = texts
            continue
        if policy.name in seen:
            errors[f"policies[{index}].name"] = [
                f"duplicate policy name {policy.name!r} (also policies[{seen[policy.name]}])"
            ]
        seen.setdefault(policy.name, index)
        policies.append(policy)
    if errors:
        detail = "; ".join(f"{field}: {' '.join(texts)}" for field, texts in errors.items())
        raise InvalidRequest(f"invalid policy file {path}: {detail}", errors=errors)
    return policies
