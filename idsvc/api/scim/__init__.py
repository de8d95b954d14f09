"""SCIM 2.0 (RFC 7643/7644) at ``/scim/v2``: users map to accounts, groups to aliases.

:func:`install` mounts the router and the SCIM media-type guard on the REST API's app. Call it
after the REST API's ``RequestLimits`` middleware is added, so the guard runs before it.
"""

from __future__ import annotations

from fastapi import FastAPI

from idsvc.api.scim.http import ScimMediaType
from idsvc.api.scim.routes import router

__all__ = ["install", "router"]


def install(app: FastAPI, *, max_body: int) -> None:
    """Include the SCIM router and wrap the app in the SCIM media-type guard."""
    app.include_router(router)
    app.add_middleware(ScimMediaType, max_body=max_body)
