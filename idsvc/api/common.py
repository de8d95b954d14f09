"""Helpers shared by the routers: paging parameters, ETag / If-Match, Location, list bodies.

ETags are strong and derived from the object's ``revision`` (``"7"``). ``If-Match`` takes
``*`` or a list of entity tags; a list that does not contain the current one is a 412, and a
write that loses a race after the check (the directory says ``Conflict`` and the revision moved)
is a 412 too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

from fastapi import Query, Request, Response

from idsvc.api.problems import PreconditionFailed
from idsvc.errors import Conflict
from idsvc.model import Page

T = TypeVar("T")

API_PREFIX = "/api/v1"
MAX_IF_MATCH = 1024

Limit = Annotated[int, Query(ge=1, le=1000, description="page size (at most 1000)")]
Cursor = Annotated[
    str | None, Query(max_length=512, description="next_cursor of the previous page")
]
Prefix = Annotated[str, Query(max_length=256, description="keep keys starting with this")]


def etag(revision: int) -> str:
    return f'"{revision}"'


def set_etag(response: Response, revision: int) -> None:
    response.headers["ETag"] = etag(revision)


def location(response: Response, path: str, key: str) -> None:
    response.headers["Location"] = f"{API_PREFIX}{path}/{quote(key, safe='@')}"


def if_match(request: Request, current: int) -> int | None:
    """The revision a conditional write must find, or None when the request is unconditional.

    Raises PreconditionFailed when ``If-Match`` names no current entity tag."""
    header = request.headers.get("if-match")
    if header is None:
        return None
    header = header.strip()
    if header == "*":
        return current
    if len(header) > MAX_IF_MATCH:
        raise PreconditionFailed("If-Match header too long")
    tags = {t.strip() for t in header.split(",")}
    if etag(current) not in tags:  # weak tags (W/"…") never match: RFC 9110 strong comparison
        raise PreconditionFailed("the object has changed; fetch it again (ETag)")
    return current


async def conditional(
    write: Callable[[], Awaitable[T]],
    if_revision: int | None,
    current: Callable[[], Awaitable[int]],
) -> T:
    """Run ``write``; a Conflict under a condition whose revision has moved becomes a 412."""
    try:
        return await write()
    except Conflict:
        if if_revision is not None and await current() != if_revision:
            raise PreconditionFailed("the object has changed; fetch it again (ETag)") from None
        raise


def page_body(page: Page[T], view: Callable[[T], Any]) -> dict[str, Any]:
    return {
        "items": [view(item) for item in page.items],
        "next_cursor": page.next_cursor,
        "total": page.total,
    }


def slice_names(
    names: Sequence[str], *, prefix: str, cursor: str | None, limit: int
) -> tuple[list[str], str | None]:
    """Page through a small sorted in-memory list of keys the same way backends page."""
    keys = sorted(n for n in names if n.startswith(prefix) and (cursor is None or n > cursor))
    chunk = keys[:limit]
    more = len(keys) > limit
    return chunk, (chunk[-1] if more and chunk else None)
