"""The objects a request handler needs, kept on ``app.state`` (no module globals).

``create_app`` builds one :class:`ApiContext` per application; handlers reach it through
:func:`context_of`. New passwords are hashed here on a small thread pool and handed to the
provisioner as a hash, so the event loop never waits for a slow scheme. The provisioner here is
the runtime's, or — when the runtime's audit sink does not already persist into the state store —
a twin that also writes the persistent trail.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from idsvc.audit import AuditSink
from idsvc.config import Settings
from idsvc.model import Secret
from idsvc.provisioning import Provisioner, check_password
from idsvc.state import StateStore

if TYPE_CHECKING:
    from idsvc.api.metrics import ApiMetrics
    from idsvc.api.security import SlidingLimiter
    from idsvc.runtime import Runtime


@dataclass
class ApiContext:
    settings: Settings
    runtime: Runtime
    state: StateStore
    provisioner: Provisioner
    audit: AuditSink  # where the API's own events go (log + persistent trail)
    token_failures: SlidingLimiter
    auth_tests: SlidingLimiter
    metrics: ApiMetrics
    hash_executor: ThreadPoolExecutor  # password hashing off the event loop (bounded)

    async def hash_password(self, password: str) -> str:
        """Validate and hash a new password on the hashing threads, so a slow scheme (ARGON2ID)
        never stalls the event loop that also serves the auth sockets."""
        plain = check_password(Secret(password))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.hash_executor, self.runtime.hasher.hash, plain)


def context_of(request: Request) -> ApiContext:
    ctx = request.app.state.idsvc
    assert isinstance(ctx, ApiContext)
    return ctx
