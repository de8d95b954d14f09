"""The HTTP edge of SCIM: error documents, the route class that produces them, and the media-type
guard for ``/scim/v2``.

What it does:

* :class:`ScimError` and :func:`error_response` build RFC 7644 §3.12 error documents
  (``urn:ietf:params:scim:api:messages:2.0:Error``, ``status`` as a string, ``scimType``) served
  as ``application/scim+json``.
* :class:`ScimRoute` is the route class of the SCIM router: every exception raised while a SCIM
  request is handled — token checks, our error tree, request validation — becomes a SCIM error
  instead of the REST API's problem+json, with the same statuses and headers
  (``WWW-Authenticate``, ``Retry-After``).
* :class:`ScimMediaType` (ASGI middleware, outside the REST API's ``RequestLimits``) accepts
  ``application/scim+json`` and ``application/json`` bodies on ``/scim/v2`` (passing them on as
  ``application/json``), and refuses other media types (415) and declared oversized bodies (413)
  with SCIM errors. Other paths pass through untouched.

What it does not do: parse bodies (routes do) or log them.

How it fails: it does not; unexpected exceptions become a logged SCIM 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from idsvc.api.limits import BODY_METHODS, header
from idsvc.api.problems import (
    TEMPORARY_RETRY_AFTER,
    ApiError,
    api_error_headers,
    clean_detail,
)
from idsvc.api.scim.filter import FilterError
from idsvc.api.scim.patch import PatchError
from idsvc.api.scim.schemas import ERROR, SCIM_JSON
from idsvc.errors import (
    AlreadyExists,
    AmbiguousEntry,
    Conflict,
    IdsvcError,
    InvalidInput,
    NotFound,
    PasswordError,
    TemporaryFailure,
)

log = logging.getLogger(__name__)

PREFIX = "/scim/v2"
MEDIA_TYPES = frozenset({b"application/scim+json", b"application/json"})


class ScimError(IdsvcError):
    """An error with a fixed HTTP status and an optional SCIM ``scimType``."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.scim_type = scim_type


def scim_json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=SCIM_JSON, headers=headers)


def error_response(
    status: int,
    detail: str,
    scim_type: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "schemas": [ERROR],
        "status": str(status),
        "detail": clean_detail(detail),
    }
    if scim_type:
        body["scimType"] = scim_type
    return scim_json(body, status, headers)


def response_for(exc: Exception) -> JSONResponse:
    """The SCIM error document for any exception raised while serving a SCIM request."""
    if isinstance(exc, ScimError):
        return error_response(exc.status, str(exc), exc.scim_type)
    if isinstance(exc, PatchError):
        return error_response(400, str(exc), exc.scim_type)
    if isinstance(exc, FilterError):
        return error_response(400, str(exc), "invalidFilter")
    if isinstance(exc, ApiError):
        return error_response(exc.status, str(exc), headers=api_error_headers(exc) or None)
    if isinstance(exc, NotFound):
        return error_response(404, str(exc))
    if isinstance(exc, AlreadyExists):
        return error_response(409, str(exc), "uniqueness")
    if isinstance(exc, Conflict | AmbiguousEntry):
        return error_response(409, str(exc))
    if isinstance(exc, TemporaryFailure):
        return error_response(
            503,
            "the directory is not answering; retry later",
            headers={"Retry-After": str(TEMPORARY_RETRY_AFTER)},
        )
    if isinstance(exc, InvalidInput | PasswordError):
        return error_response(400, str(exc), "invalidValue")
    if isinstance(exc, RequestValidationError):
        errors = exc.errors()
        where = ".".join(str(p) for p in errors[0].get("loc", ())) if errors else "request"
        return error_response(400, f"invalid value for {where[:64]}", "invalidValue")
    if isinstance(exc, StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail))
    log.error("unexpected error in a SCIM request", exc_info=exc)
    return error_response(500, "internal error")


class ScimRoute(APIRoute):
    """Routes of the SCIM router answer every error as a SCIM error document."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def scim_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # every error of a SCIM route is answered in SCIM form
                return response_for(exc)

        return scim_handler


class ScimMediaType:
    """Pure ASGI middleware; see the module docstring."""

    def __init__(self, app: ASGIApp, *, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == PREFIX or path.startswith(PREFIX + "/")) or scope["method"] not in (
            BODY_METHODS
        ):
            await self.app(scope, receive, send)
            return
        length = header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            refusal = error_response(413, f"the body exceeds {self.max_body} bytes", "tooLarge")
            await refusal(scope, receive, send)
            return
        raw = header(scope, b"content-type")
        if raw is not None or (length is not None and length != b"0"):
            media = (raw or b"").split(b";", 1)[0].strip().lower()
            if media not in MEDIA_TYPES:
                refusal = error_response(415, "send the body as application/scim+json")
                await refusal(scope, receive, send)
                return
        headers = [(k, v) for k, v in scope.get("headers", ()) if k != b"content-type"]
        headers.append((b"content-type", b"application/json"))
        await self.app({**scope, "headers": headers}, receive, send)
