"""``/api/v1/audit``: the persistent audit trail, newest first, filtered and paged.

Global admins and global read-only tokens see every event; domain-scoped tokens see events whose
target lies in their domains (accounts, aliases, the domain itself).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from idsvc.api.common import API_PREFIX, Cursor, Limit, page_body
from idsvc.api.context import context_of
from idsvc.api.problems import error_responses
from idsvc.api.schemas import AuditOut, ListOf
from idsvc.api.security import Principal, authenticate
from idsvc.errors import InvalidInput
from idsvc.state import AuditRecord

router = APIRouter(
    prefix=API_PREFIX + "/audit", tags=["audit"], dependencies=[Depends(authenticate)]
)
Caller = Annotated[Principal, Depends(authenticate)]
Text = Annotated[str | None, Query(max_length=1024)]


@router.get("", response_model=ListOf[AuditOut], responses=error_responses(401, 422, 429, 503))
async def query(
    request: Request,
    caller: Caller,
    actor: Text = None,
    action: Annotated[
        str | None, Query(max_length=128, description="exact, or a prefix ending in .*")
    ] = None,
    target: Text = None,
    since: Annotated[datetime | None, Query(description="inclusive, with time zone")] = None,
    until: Annotated[datetime | None, Query(description="exclusive, with time zone")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidInput(f"{name} needs a time zone (e.g. 2024-01-01T00:00:00Z)")
    page = await context_of(request).state.query_audit(
        actor=actor,
        action=action,
        target=target,
        domains=None if caller.all_domains else list(caller.domains),
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )
    return page_body(page, _view)


def _view(r: AuditRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "time": r.time.isoformat(),
        "action": r.action,
        "outcome": r.outcome,
        "actor": r.actor,
        "target": r.target,
        "remote": r.remote,
        "service": r.service,
        "detail": r.detail,
    }
