"""Dry runs: the decision a push, delete or promotion would get, with nothing changed.

Above both `governance` (push and delete) and `promotions` (which itself builds on
`governance`), so neither imports the other to answer the evaluate endpoint.
"""

from __future__ import annotations

from typing import Any

from service.core.governance import check_delete, check_push
from service.core.promotions import evaluate_request
from service.domain.errors import InvalidRequest
from service.domain.policy import Decision
from service.services import Services


def evaluate(svc: Services, args: dict[str, Any], requester: str | None = None) -> Decision:
    """The dry-run endpoint: the same decision the real push, delete or promotion gets
    (`requester`: who asks, for the approvals gate)."""
    repository, action = args["repository"], args["action"]
    if action == "push":
        if "tag" not in args:
            raise InvalidRequest("a push needs a tag", errors={"tag": ["required for push"]})
        return check_push(svc, repository, args["tag"], args.get("digest"))
    if action == "delete":
        reference = args.get("digest") or args.get("tag")
        if not reference:
            raise InvalidRequest("a delete needs a digest or a tag",
                                 errors={"digest": ["digest or tag required for delete"]})
        return check_delete(svc, repository, reference)
    return evaluate_request(svc, args, requester)
