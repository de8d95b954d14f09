"""RFC 9457 problem details: the ONE place that turns errors into HTTP responses.

What it does: maps the ``idsvc.errors`` tree and the API's own errors (below) to
``application/problem+json`` responses with a fixed ``type`` URI per kind, a short ``title``, a
``detail`` that is safe to show (our error messages never carry secrets) and, for 422, the list
of field errors. ``TemporaryFailure`` and 429 carry ``Retry-After``. It also describes those
responses for the OpenAPI document (:func:`error_responses`).

What it does not do: log request bodies, or show foreign exception text: an unexpected exception
becomes a bare 500 and is logged with its traceback.

How it fails: it does not; every handler returns a response.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from idsvc.errors import (
    AlreadyExists,
    AmbiguousEntry,
    Conflict,
    IdsvcError,
    InvalidInput,
    NotFound,
    PasswordError,
    ReadOnlyDirectory,
    TemporaryFailure,
)
from idsvc.password_policy import PolicyViolation

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://idsvc.invalid/problems/"  # not dereferenceable; a stable identifier
MAX_DETAIL = 300


class ApiError(IdsvcError):
    """Errors raised only by the HTTP layer; each subclass fixes its status."""

    status = 400
    kind = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Unauthorized(ApiError):
    status, kind, title = 401, "unauthorized", "Authentication required"


class Forbidden(ApiError):
    status, kind, title = 403, "forbidden", "Not allowed"


class PreconditionFailed(ApiError):
    status, kind, title = 412, "precondition-failed", "Precondition failed"


class PayloadTooLarge(ApiError):
    status, kind, title = 413, "payload-too-large", "Request body too large"


class UnsupportedMediaType(ApiError):
    status, kind, title = 415, "unsupported-media-type", "Unsupported media type"


class TooManyRequests(ApiError):
    status, kind, title = 429, "too-many-requests", "Too many requests"


# (status, type suffix, title) for the shared error tree; the first matching class wins.
_TREE: Sequence[tuple[type[IdsvcError], int, str, str]] = (
    (NotFound, 404, "not-found", "Not found"),
    (AlreadyExists, 409, "already-exists", "Already exists"),
    (Conflict, 409, "conflict", "Conflict"),
    (AmbiguousEntry, 409, "ambiguous", "Ambiguous directory entry"),
    (ReadOnlyDirectory, 409, "read-only-directory", "Read-only directory"),
    (TemporaryFailure, 503, "temporary-failure", "Temporarily unavailable"),
    (PolicyViolation, 422, "password-policy", "Password policy violation"),
    (InvalidInput, 422, "invalid-input", "Invalid input"),
    (PasswordError, 422, "invalid-password-hash", "Unusable password hash"),
)
TEMPORARY_RETRY_AFTER = 5


class FieldError(BaseModel):
    """One invalid field: ``loc`` is the path (``body``/``query``/``path`` first)."""

    model_config = ConfigDict(extra="forbid")
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    model_config = ConfigDict(extra="forbid")
    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


def clean_detail(text: str) -> str:
    """``text`` safe to echo in an error body: printable characters only, at most MAX_DETAIL."""
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text[:MAX_DETAIL]


def api_error_headers(exc: ApiError) -> dict[str, str]:
    """The headers an ``ApiError`` carries (``Retry-After``, ``WWW-Authenticate``)."""
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="idsvc"'
    return headers


def problem(
    status: int,
    kind: str,
    title: str,
    detail: str | None = None,
    *,
    instance: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": TYPE_BASE + kind, "title": title, "status": status}
    if detail:
        body["detail"] = clean_detail(detail)
    if instance:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def error_response(exc: IdsvcError, instance: str | None = None) -> JSONResponse:
    """The response for one of our errors (used by handlers and by middleware)."""
    if isinstance(exc, ApiError):
        return problem(
            exc.status,
            exc.kind,
            exc.title,
            str(exc),
            instance=instance,
            headers=api_error_headers(exc),
        )
    status, kind, title, detail = classify(exc)
    retry = {"Retry-After": str(TEMPORARY_RETRY_AFTER)} if status == 503 else None
    return problem(status, kind, title, detail, instance=instance, headers=retry)


def classify(exc: IdsvcError) -> tuple[int, str, str, str]:
    """``(status, kind, title, detail)`` for one of our errors; the web pages use it too."""
    if isinstance(exc, ApiError):
        return exc.status, exc.kind, exc.title, str(exc)
    for cls, status, kind, title in _TREE:
        if isinstance(exc, cls):
            detail = "the directory is not answering; retry later" if status == 503 else str(exc)
            return status, kind, title, detail
    log.error("unmapped error %s", type(exc).__name__)
    return 500, "internal", "Internal error", ""


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for err in exc.errors()[:50]:
        loc = [p if isinstance(p, int) else clean_detail(str(p))[:64] for p in err.get("loc", ())]
        out.append(
            {"loc": loc, "msg": clean_detail(str(err.get("msg", ""))), "type": str(err.get("type"))}
        )
    return out


async def _on_idsvc(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IdsvcError)
    return error_response(exc, request.url.path)


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _field_errors(exc)
    # a body that is not JSON at all is a 400, a JSON value with wrong fields a 422
    if any(e["type"] == "json_invalid" for e in errors):
        return problem(
            400, "malformed-json", "Malformed JSON", "the body is not valid JSON", errors=errors
        )
    return problem(
        422,
        "invalid-input",
        "Invalid input",
        "the request has invalid fields",
        instance=request.url.path,
        errors=errors,
    )


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kinds = {404: "not-found", 405: "method-not-allowed", 400: "bad-request"}
    headers = dict(exc.headers or {})
    return problem(
        exc.status_code,
        kinds.get(exc.status_code, "http-error"),
        str(exc.detail) if isinstance(exc.detail, str) else "HTTP error",
        instance=request.url.path,
        headers=headers or None,
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal", "Internal error", instance=request.url.path)


def install(app: FastAPI) -> None:
    """Register every handler on ``app``."""
    app.add_exception_handler(IdsvcError, _on_idsvc)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)


_DESCRIPTIONS = {
    400: "Malformed request (not JSON, bad header)",
    401: "Missing or invalid token",
    403: "The token may not do this",
    404: "No such object (or not visible to this token)",
    409: "Conflicts with the stored state",
    412: "If-Match does not match the current revision",
    413: "Body larger than api.max_body",
    415: "Body is not application/json",
    422: "Invalid fields",
    429: "Rate limited; see Retry-After",
    503: "Directory unavailable; see Retry-After",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses, all problem+json."""
    return {
        status: {
            "description": _DESCRIPTIONS[status],
            "model": Problem,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }
