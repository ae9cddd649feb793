"""Domain exceptions; `service.http.errors.register_error_handlers` maps them to HTTP."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""

    code = "invalid_request"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class InvalidRequest(DomainError):
    """Input that is well-formed JSON but breaks a rule (400/422)."""

    code = "invalid_request"

    def __init__(self, message: str, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or {}


class Unprocessable(InvalidRequest):
    """Semantically invalid input (422), e.g. an unknown environment."""


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class IdempotencyMismatch(DomainError):
    code = "idempotency_mismatch"


class Unauthorized(DomainError):
    code = "unauthorized"


class Forbidden(DomainError):
    code = "forbidden"


class PolicyDenied(DomainError):
    """A decision said no; carries the violations."""

    code = "policy_denied"

    def __init__(self, message: str, decision: Any) -> None:
        super().__init__(message)
        self.decision = decision


class RegistryUnavailable(DomainError):
    """502 when the registry answered wrongly, 503 when it could not be reached at all."""

    code = "registry_unavailable"

    def __init__(self, message: str, reachable: bool = True) -> None:
        super().__init__(message)
        self.status = 502 if reachable else 503


class Busy(DomainError):
    """This process is at a concurrency bound (uploads, manifest memory): retry shortly."""

    code = "busy"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreUnavailable(DomainError):
    code = "store_unavailable"
