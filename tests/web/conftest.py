"""Fixtures for the web pages: the idsvc app (embedded directory, app passwords in an overlay,
state store, second-factor store in ``tmp_path``) driven in-process over httpx, as a browser
would: cookies, the CSRF token read from the page, form posts with ``Origin``.

``https://idsvc.test`` is the base URL because the session cookie is ``Secure``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from idsvc.api import create_app
from idsvc.app_passwords import AppPasswords
from idsvc.audit import LogAuditSink
from idsvc.auth.engine import Authenticator
from idsvc.config import AuthSettings, Settings, WebSettings
from idsvc.model import Secret
from idsvc.overlay import OverlayStore
from idsvc.password_policy import PasswordPolicy
from idsvc.passwords import PasswordHasher
from idsvc.provisioning import Provisioner
from idsvc.runtime import Runtime
from idsvc.state import StateStore, create_token
from tests.api.conftest import api_settings

BASE = "https://idsvc.test"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PASSWORD = "correct horse battery staple"


async def web_runtime(settings: Settings, directory: Any, overlay: OverlayStore) -> Runtime:
    audit = LogAuditSink()
    hasher = PasswordHasher(settings.passwords)
    auth = Authenticator(directory, hasher, settings.auth, audit=audit, app_passwords=overlay)
    policy = PasswordPolicy.from_settings(settings)
    prov = Provisioner(directory, hasher, audit=audit, invalidator=auth, policy=policy)
    runtime = Runtime(settings, directory, hasher, auth, prov, audit)
    runtime.overlay = overlay
    runtime.app_passwords = AppPasswords(directory, overlay, audit=audit, invalidator=auth)
    return runtime


@dataclass
class Browser:
    """An httpx client that behaves like a same-origin browser tab."""

    client: httpx.AsyncClient

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.client.get(path, **kw)

    async def csrf(self, path: str) -> str:
        page = await self.client.get(path)
        found = CSRF.search(page.text)
        assert found is not None, page.text[:500]
        return found.group(1)

    async def post(
        self, path: str, data: dict[str, Any], *, csrf: str | None, origin: str | None = BASE
    ) -> httpx.Response:
        headers = {"Sec-Fetch-Site": "same-origin"}
        if origin is not None:
            headers["Origin"] = origin
        body = dict(data)
        if csrf is not None:
            body["csrf"] = csrf
        return await self.client.post(path, data=body, headers=headers)

    async def submit(self, form_page: str, path: str, data: dict[str, Any]) -> httpx.Response:
        """Open ``form_page``, take its CSRF token, post ``data`` to ``path``."""
        return await self.post(path, data, csrf=await self.csrf(form_page))


@dataclass
class WebEnv:
    app: FastAPI
    state: StateStore
    runtime: Runtime
    settings: Settings
    admin_token: str

    def browser(self, peer: str = "198.51.100.7") -> Browser:
        transport = httpx.ASGITransport(app=self.app, client=(peer, 40000))
        return Browser(httpx.AsyncClient(transport=transport, base_url=BASE))

    async def token(
        self, scope: str, domains: tuple[str, ...] = (), owner: str | None = None
    ) -> str:
        _info, secret = await create_token(
            self.state, name=f"t-{scope}", scope=scope, domains=domains, owner=owner
        )
        return secret

    async def user(self, address: str, password: str = PASSWORD) -> None:
        domain = address.rpartition("@")[2]
        prov = self.runtime.provisioner
        try:
            await prov.get_domain(domain)
        except Exception:
            await prov.create_domain(domain, actor="test")
        await prov.create_user(address, actor="test", password=Secret(password))


def web_settings(tmp_path: Path, **api: Any) -> Settings:
    """The API test settings with the second-factor key file under ``tmp_path`` (the default,
    /etc/idsvc/web-totp.key for root, is no place for a test's key)."""
    settings = api_settings(tmp_path, **api)
    web = WebSettings(second_factor_key=tmp_path / "keys" / "web-totp.key")
    return settings.model_copy(update={"web": web})


@contextlib.asynccontextmanager
async def open_web(directory: Any, tmp_path: Path, **auth: Any) -> AsyncIterator[WebEnv]:
    """The app over ``directory``; ``auth`` overrides auth settings (e.g. penalties on)."""
    settings = web_settings(tmp_path)
    if auth:
        merged = {**settings.auth.model_dump(), **auth}
        settings = settings.model_copy(update={"auth": AuthSettings(**merged)})
    overlay = await OverlayStore.open(tmp_path / "overlay.db")
    runtime = await web_runtime(settings, directory, overlay)
    state = await StateStore.open_for(settings)
    app = create_app(settings, runtime, state)
    _info, admin = await create_token(state, name="admin", scope="admin")
    try:
        yield WebEnv(app, state, runtime, settings, admin)
    finally:
        app.state.idsvc.close()
        runtime.provisioner.close()
        await runtime.authenticator.close()
        await overlay.close()
        await state.close()


@pytest.fixture
async def web(embedded_directory: Any, tmp_path: Path) -> AsyncIterator[WebEnv]:
    async with open_web(embedded_directory, tmp_path) as env:
        yield env


async def admin_login(browser: Browser, token: str) -> None:
    answer = await browser.submit("/admin/login", "/admin/login", {"token": token})
    assert answer.status_code == 303, answer.text[:400]


async def account_login(
    browser: Browser, address: str, password: str = PASSWORD, code: str = ""
) -> httpx.Response:
    return await browser.submit(
        "/account/login", "/account/login", {"address": address, "password": password, "code": code}
    )
