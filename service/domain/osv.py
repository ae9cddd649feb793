"""OSV advisories as data: the record schema an import accepts, and the naming rules that
match an inventory package to an advisory (ecosystem spelling, package-name normalisation).

Pure: no Redis, no files. `validation_problem` answers with the first problem of a record,
in the order a reader would check it (identifiers, aliases, then each affected package).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates_schema
from packaging.utils import canonicalize_name

RANGE_TYPES = ("ECOSYSTEM", "SEMVER", "GIT")
EVENTS = frozenset({"introduced", "fixed", "last_affected", "limit"})
_BASES = {"debian": "Debian", "ubuntu": "Ubuntu", "alpine": "Alpine", "pypi": "PyPI", "npm": "npm"}


# --------------------------------------------------------------------------- naming rules


def canonical_ecosystem(ecosystem: str) -> str:
    """OSV's ecosystem spelling, release kept: ``debian:12`` -> ``Debian:12``, LTS tag dropped."""
    base, sep, release = ecosystem.strip().partition(":")
    base = _BASES.get(base.lower(), base)
    if base == "Ubuntu" and release.endswith(":LTS"):
        release = release[: -len(":LTS")]
    return f"{base}{sep}{release}" if release else base


def applicable_ecosystems(ecosystem: str) -> list[str]:
    """Advisory ecosystems covering an inventory ecosystem: ``Debian:12`` -> also ``Debian``."""
    eco = canonical_ecosystem(ecosystem)
    base = eco.partition(":")[0]
    return [eco, base] if base != eco else [eco]


def ecosystem_applies(advisory_ecosystem: str, inventory_ecosystem: str) -> bool:
    """True when an advisory's ecosystem covers a package of ``inventory_ecosystem``."""
    return canonical_ecosystem(advisory_ecosystem) in applicable_ecosystems(inventory_ecosystem)


def normalize_name(ecosystem: str, name: str) -> str:
    """The package name used for matching: PEP 503 for PyPI, as is elsewhere."""
    if canonical_ecosystem(ecosystem) == "PyPI":
        return canonicalize_name(name)
    return name.strip()


# --------------------------------------------------------------------------- the record schema


def _said(message: str) -> dict[str, str | list[Any] | dict[Any, Any]]:
    """One message for every way a field can be wrong (absent, null, wrong type, invalid)."""
    return dict.fromkeys(("required", "null", "invalid", "type", "validator_failed"), message)


def _text(message: str, **kwargs: Any) -> fields.String:
    """A non-empty string; `message` whatever is wrong with it."""
    return fields.String(validate=validate.Length(min=1, error=message),
                         error_messages=_said(message), **kwargs)


def _strings(message: str) -> fields.List:
    return fields.List(fields.String(error_messages=_said(message)),
                       error_messages=_said(message))


def _check_events(events: list[Any]) -> None:
    """Each event is one `{kind: version}` pair, the kind one of OSV's four."""
    for event in events:
        if not isinstance(event, dict) or len(event) != 1:
            raise ValidationError("an event must have exactly one key")
        ((name, value),) = event.items()
        if name not in EVENTS or not isinstance(value, str) or not value:
            raise ValidationError(f"bad event {event!r}")


class _Lenient(Schema):
    """Validation only: OSV's other fields (severity, database_specific, ...) pass through."""

    class Meta:
        unknown = INCLUDE


_BAD_TYPE = "range type must be ECOSYSTEM, SEMVER or GIT"
_BAD_PACKAGE = "affected[].package needs ecosystem and name"


class OsvRangeSchema(_Lenient):
    """affected[].ranges[]: a typed list of events (a GIT range names its repository)."""

    error_messages = {"type": _BAD_TYPE}

    type = fields.String(required=True, validate=validate.OneOf(RANGE_TYPES, error=_BAD_TYPE),
                         error_messages=_said(_BAD_TYPE))
    repo = fields.Raw(allow_none=True)
    events = fields.List(fields.Raw(allow_none=True), required=True,
                         validate=[validate.Length(min=1, error="range without events"),
                                   _check_events],
                         error_messages=_said("range without events"))

    @validates_schema(skip_on_field_errors=False)  # the repository is checked before events
    def _git_repo(self, data: Mapping[str, Any], **_: Any) -> None:
        if data.get("type") == "GIT" and not isinstance(data.get("repo"), str):
            raise ValidationError("GIT range without repo")


class OsvPackageSchema(_Lenient):
    """affected[].package: the ecosystem and the name advisories are indexed by."""

    error_messages = {"type": _BAD_PACKAGE}

    ecosystem = _text(_BAD_PACKAGE, required=True)
    name = _text(_BAD_PACKAGE, required=True)


class OsvAffectedSchema(_Lenient):
    """affected[]: one package, its ranges and listed versions."""

    error_messages = {"type": _BAD_PACKAGE}

    package = fields.Nested(OsvPackageSchema, required=True,
                            error_messages=_said(_BAD_PACKAGE))
    versions = _strings("affected[].versions must be a list of strings")
    ranges = fields.List(fields.Nested(OsvRangeSchema, error_messages=_said(_BAD_TYPE)),
                         error_messages=_said("affected[].ranges must be a list"))


class OsvRecordSchema(_Lenient):
    """The part of an OSV record (ossf.github.io/osv-schema) that matching relies on."""

    error_messages = {"type": "not a JSON object"}

    id = _text("id missing or not a string", required=True)
    modified = _text("modified missing or not a string", required=True)
    aliases = _strings("aliases must be a list of strings")
    related = _strings("related must be a list of strings")
    affected = fields.List(fields.Nested(OsvAffectedSchema, error_messages=_said(_BAD_PACKAGE)),
                           error_messages=_said("affected must be a list"))


_RECORD = OsvRecordSchema()


def _first_message(errors: Any) -> str:
    """The first message of marshmallow's nested error mapping: a schema's own (`_schema`)
    before its fields', fields in declared order, list items in order."""
    while not isinstance(errors, str):
        if isinstance(errors, dict):
            errors = errors.get("_schema") or next(iter(errors.values()))
        else:
            errors = errors[0]
    return errors


def validation_problem(record: Any) -> str | None:
    """Why ``record`` is not a usable OSV record (the minimal schema), or None."""
    errors = _RECORD.validate(record)
    return _first_message(errors) if errors else None
