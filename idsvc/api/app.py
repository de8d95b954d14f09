"""The FastAPI application factory: ``create_app(settings, runtime, state)``.

No globals: everything a handler needs hangs off ``app.state.idsvc`` (an ``ApiContext``). The
app is built in two steps so the OpenAPI document can be produced without a directory
(:func:`build_app`), and the runtime is attached by :func:`create_app`.

Middleware, outermost first: metrics (route template, method, status), the SCIM media-type check
(``/scim/v2`` only), request limits (413/415).
Exception handlers come from ``idsvc.api.problems`` only. Docs UIs are off; ``/openapi.json``
is public (it describes the API, it holds no data).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from idsvc.api import problems, scim
from idsvc.api.context import ApiContext
from idsvc.api.limits import RequestLimits
from idsvc.api.metrics import ApiMetrics, MetricsMiddleware
from idsvc.api.routes import (
    aliases,
    app_passwords,
    audit,
    auth_test,
    domains,
    ops,
    tokens,
    users,
)
from idsvc.api.security import SlidingLimiter, parse_networks
from idsvc.app_passwords import AppPasswords
from idsvc.audit import AuditSink, FanoutAuditSink
from idsvc.config import Settings
from idsvc.provisioning import Provisioner
from idsvc.state import StateStore

if TYPE_CHECKING:
    from idsvc.runtime import Runtime

TITLE = "idsvc provisioning API"
WEB_FORM_PREFIXES = ("/admin/", "/account/", "/account")
VERSION = "1"


def build_app(settings: Settings) -> FastAPI:
    """The routes, handlers and middleware, without a runtime (enough for the OpenAPI doc)."""
    app = FastAPI(
        title=TITLE,
        version=VERSION,
        summary="Domains, users, aliases, tokens and the audit trail of an idsvc directory",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    problems.install(app)
    # routers carry their full prefix so that a matched route's ``path`` is the whole template
    for module in (domains, users, app_passwords, aliases, tokens, audit, auth_test, ops):
        app.include_router(module.router)
    metrics = ApiMetrics()
    app.state.metrics = metrics
    app.add_middleware(
        RequestLimits, max_body=settings.api.max_body, form_prefixes=WEB_FORM_PREFIXES
    )
    scim.install(app, max_body=settings.api.max_body)  # after RequestLimits: runs first
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = tidy_openapi(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    summary=app.summary,
                    openapi_version=app.openapi_version,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def tidy_openapi(doc: dict[str, Any]) -> dict[str, Any]:
    """Error responses are problem+json only; FastAPI's default 422 schema is replaced."""
    for path in doc.get("paths", {}).values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if status[0] in "45" and problems.PROBLEM_JSON in content:
                    content.pop("application/json", None)
                elif status == "422":
                    response["description"] = "Invalid fields"
                    response["content"] = {
                        problems.PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
                    }
    schemas = doc.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return doc


def _api_audit(runtime: Runtime, state: StateStore) -> tuple[Provisioner, AuditSink]:
    if state.audit_sink.attached:  # the runtime already persists through our sink
        return runtime.provisioner, runtime.audit
    sink = FanoutAuditSink(runtime.audit, state.audit_sink)
    twin = Provisioner(
        runtime.directory,
        runtime.hasher,
        audit=sink,
        invalidator=runtime.authenticator,
        policy=runtime.provisioner.policy,
    )
    return twin, sink


def create_app(settings: Settings, runtime: Runtime, state: StateStore) -> FastAPI:
    """The API over ``runtime`` (directory, provisioner, authenticator) and ``state`` (tokens,
    audit)."""
    app = build_app(settings)
    provisioner, sink = _api_audit(runtime, state)
    app.state.idsvc = ApiContext(
        settings=settings,
        runtime=runtime,
        state=state,
        provisioner=provisioner,
        audit=sink,
        token_failures=SlidingLimiter(
            settings.api.token_failures, settings.api.token_failure_window
        ),
        auth_tests=SlidingLimiter(settings.api.auth_test_per_minute, 60.0),
        metrics=app.state.metrics,
        trusted_proxies=parse_networks(settings.api.trusted_proxies),
        app_passwords=_app_passwords(runtime, sink),
    )
    if settings.web.enabled:
        from idsvc import web

        web.install(app, app.state.idsvc)
    return app


def _app_passwords(runtime: Runtime, sink: AuditSink) -> AppPasswords | None:
    """The app password use cases, auditing into the API's trail (None when disabled)."""
    if runtime.overlay is None:
        return None
    return AppPasswords(
        runtime.directory, runtime.overlay, audit=sink, invalidator=runtime.authenticator
    )
