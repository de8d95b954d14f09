"""Fixtures for the REST API tests: a Runtime over the ``directory`` fixture (both backends), a
state store in ``tmp_path``, the app served in-process through httpx's ASGI transport, and tokens
of every scope.

Password hashing uses SHA512-CRYPT with the minimum rounds so tests stay quick (the production
default is ARGON2ID); the authenticator runs with no failure delay and no penalties.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from idsvc.api import create_app
from idsvc.audit import LogAuditSink
from idsvc.auth.engine import Authenticator
from idsvc.config import ApiSettings, AuthSettings, PasswordSettings, Settings
from idsvc.password_policy import PasswordPolicy
from idsvc.passwords import PasswordHasher
from idsvc.provisioning import Provisioner
from idsvc.runtime import Runtime
from idsvc.state import StateStore, TokenInfo, create_token


def api_settings(tmp_path: Path, **api: Any) -> Settings:
    return Settings(
        passwords=PasswordSettings(scheme="SHA512-CRYPT", sha_crypt_rounds=1000),
        auth=AuthSettings(failure_delay=0, penalty=False),
        api=ApiSettings(
            state_path=tmp_path / "api-state" / "state.db",
            bootstrap_token_file=tmp_path / "api-state" / "admin.token",
            **api,
        ),
    )


async def build_runtime_over(settings: Settings, directory: Any) -> Runtime:
    audit = LogAuditSink()
    hasher = PasswordHasher(settings.passwords)
    authenticator = Authenticator(directory, hasher, settings.auth, audit=audit)
    policy = PasswordPolicy.from_settings(settings)
    provisioner = Provisioner(
        directory, hasher, audit=audit, invalidator=authenticator, policy=policy
    )
    return Runtime(settings, directory, hasher, authenticator, provisioner, audit)


@dataclass
class Api:
    """The app under test with helpers; ``tokens`` maps a role name to its bearer token."""

    app: FastAPI
    client: httpx.AsyncClient
    state: StateStore
    runtime: Runtime
    settings: Settings
    tokens: dict[str, str] = field(default_factory=dict)
    infos: dict[str, TokenInfo] = field(default_factory=dict)

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    async def call(self, role: str | None, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if role is not None:
            headers.update(self.auth(role))
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def token(self, role: str, scope: str, domains: tuple[str, ...] = (), **kw: Any) -> str:
        info, secret = await create_token(
            self.state, name=role, scope=scope, domains=domains, created_by="test", **kw
        )
        self.tokens[role] = secret
        self.infos[role] = info
        return secret


@pytest.fixture
async def api(directory: Any, tmp_path: Path) -> AsyncIterator[Api]:
    settings = api_settings(tmp_path)
    runtime = await build_runtime_over(settings, directory)
    state = await StateStore.open_for(settings)
    app = create_app(settings, runtime, state)
    transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://idsvc.test") as client:
        env = Api(app, client, state, runtime, settings)
        await env.token("admin", "admin")
        try:
            yield env
        finally:
            app.state.idsvc.close()
            runtime.provisioner.close()
            await runtime.authenticator.close()
            await state.close()
