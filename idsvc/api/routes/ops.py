"""Public operational routes: ``/healthz`` (process is up), ``/readyz`` (the directory answers),
``/metrics`` (Prometheus text).

``/metrics`` is public only as ``api.metrics_public`` says: ``loopback`` (default: clients on
127.0.0.0/8, ::1 or the UNIX socket need no token, others need any valid token), ``always``, or
``never`` (a token is always needed). Its labels never carry users or addresses.
"""

from __future__ import annotations

import ipaddress

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from idsvc.api.context import context_of
from idsvc.api.problems import error_responses
from idsvc.api.schemas import Health
from idsvc.api.security import authenticate, bearer

router = APIRouter(tags=["operations"])

# answered without a token from anywhere; /metrics only as api.metrics_public says
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})


@router.get("/healthz", response_model=Health)
async def healthz() -> dict[str, str]:
    """Always 200 while the process serves requests."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Health, responses=error_responses(503))
async def readyz(request: Request) -> dict[str, str]:
    """200 when the directory answers a ping, else 503 (problem+json with Retry-After)."""
    await context_of(request).runtime.directory.ping()
    return {"status": "ready"}


def _is_local(request: Request) -> bool:
    host = request.client.host if request.client else None
    if not host:  # UNIX socket: no peer address
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}},
        **error_responses(401, 429),
    },
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this process (see module docstring for who may read them)."""
    ctx = context_of(request)
    policy = ctx.settings.api.metrics_public
    if policy == "never" or (policy == "loopback" and not _is_local(request)):
        await authenticate(request, await bearer(request))
    ctx.metrics.audit_dropped.set(ctx.state.audit_sink.dropped)
    ctx.metrics.auth_audit_dropped.set(ctx.runtime.audit_dropped)
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
