"""The web pages on the API listener: the admin console (``/admin``) and self-service
(``/account``). Server-rendered (Jinja2, autoescaped), htmx from ``/web-static`` (one vendored
file), no JavaScript build and no CDN. See docs/web.md and ``idsvc.web.core`` for the rules."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from idsvc.api.context import ApiContext
from idsvc.config import default_config_dir
from idsvc.state import default_state_path
from idsvc.web import account, admin
from idsvc.web.core import HERE, STATIC_PREFIX, SecurityHeaders, WebContext, build_templates
from idsvc.web.second_factor import SecondFactors
from idsvc.web.sessions import SessionStore


def install(app: FastAPI, api: ApiContext) -> WebContext:
    """Add the pages, the static files and the security headers to the API's ``app``."""
    settings = api.settings
    path = settings.web.second_factor_path or default_state_path(settings).parent / "web.db"
    key = settings.web.second_factor_key or default_config_dir() / "web-totp.key"
    web = WebContext(
        api=api,
        sessions=SessionStore(
            idle=settings.web.session_idle,
            absolute=settings.web.session_absolute,
            max_sessions=settings.web.max_sessions,
        ),
        templates=build_templates(),
        factors=SecondFactors(path, key),
    )
    assert web.factors is not None
    api.closers.append(web.factors.close)
    for provisioner in {id(p): p for p in (api.provisioner, api.runtime.provisioner)}.values():
        provisioner.deletion_hooks.append(web.factors.forget)
    app.state.web = web
    app.include_router(admin.router)
    app.include_router(account.router)
    app.mount(STATIC_PREFIX, StaticFiles(directory=HERE / "static"), name="web-static")
    app.add_middleware(SecurityHeaders)
    return web
