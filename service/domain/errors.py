"""Domain exceptions: what went wrong, never how HTTP says it.

`service.http.errors` holds the one table that maps each of them (by type, and by the
attributes that carry meaning, such as `RegistryUnavailable.reachable`) to a status and to the
error envelope's code; a unit test fails on a subclass that table does not name.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class InvalidRequest(DomainError):
    """Input that is well-formed but breaks a rule; `errors` names the fields."""

    def __init__(self, message: str, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or {}


class Unprocessable(InvalidRequest):
    """Semantically invalid input, e.g. an unknown environment."""


class NotFound(DomainError):
    """The named thing does not exist (or the caller may not see it)."""


class Conflict(DomainError):
    """The current state does not allow this now."""


class IdempotencyMismatch(DomainError):
    """An Idempotency-Key reused with another body."""


class Unauthorized(DomainError):
    """No caller could be authenticated."""


class Forbidden(DomainError):
    """The caller is known and may not do this."""


class PolicyDenied(DomainError):
    """A decision said no; carries the violations."""

    def __init__(self, message: str, decision: Any) -> None:
        super().__init__(message)
        self.decision = decision


class RegistryUnavailable(DomainError):
    """The registry answered wrongly (`reachable`), or could not be reached at all."""

    def __init__(self, message: str, reachable: bool = True) -> None:
        super().__init__(message)
        self.reachable = reachable


class Busy(DomainError):
    """This process is at a concurrency bound (uploads, manifest memory): retry shortly."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreUnavailable(DomainError):
    """The state store (Redis) cannot be used now."""
