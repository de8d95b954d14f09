"""Request guards that run before routing: body size (413) and content type (415).

What it does: for requests that carry a body (POST/PUT/PATCH), the whole body is read up front,
at most ``max_body`` bytes (a larger ``Content-Length`` is refused before reading anything; a
chunked body is cut off at the limit), and replayed to the application. A body whose
``Content-Type`` is not JSON (``application/json``, or ``application/merge-patch+json`` for PATCH)
answers 415 (under the web pages' prefixes: a body that is not a URL-encoded form). Bodies on other
methods are drained and ignored.

What it does not do: parse JSON (the routes do, with ``extra="forbid"`` models).

How it fails: it answers problem+json 413/415/400 itself; the app is not called.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idsvc.api.problems import (
    ApiError,
    PayloadTooLarge,
    UnsupportedMediaType,
    error_response,
)

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
JSON_TYPES = frozenset({"application/json"})
PATCH_TYPES = frozenset({"application/json", "application/merge-patch+json"})
FORM_TYPES = frozenset({"application/x-www-form-urlencoded"})


class BadRequest(ApiError):
    pass


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of request header ``name`` (lower-case bytes, as ASGI gives them)."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


class RequestLimits:
    """Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer responses)."""

    def __init__(self, app: ASGIApp, *, max_body: int, form_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_body = max_body
        self.form_prefixes = form_prefixes  # paths of HTML pages: forms instead of JSON

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        try:
            body = await self._read(scope, receive)
        except ApiError as exc:
            await error_response(exc, scope.get("path"))(scope, receive, send)
            return
        if body:
            raw_type = header(scope, b"content-type") or b""
            media = raw_type.split(b";", 1)[0].strip().lower().decode("latin-1")
            allowed = PATCH_TYPES if scope["method"] == "PATCH" else JSON_TYPES
            if str(scope.get("path", "")).startswith(self.form_prefixes):
                allowed = FORM_TYPES
            if media not in allowed:
                refusal = UnsupportedMediaType(f"send the body as {' or '.join(sorted(allowed))}")
                await error_response(refusal, scope.get("path"))(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # only http.disconnect can follow

        await self.app(scope, replay, send)

    async def _read(self, scope: Scope, receive: Receive) -> bytes:
        length = header(scope, b"content-length")
        if length is not None:
            if not length.isdigit() or len(length) > 18:
                raise BadRequest("malformed Content-Length")
            if int(length) > self.max_body:
                raise PayloadTooLarge(f"the body exceeds {self.max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise PayloadTooLarge(f"the body exceeds {self.max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
