"""The objects a request handler needs, kept on ``app.state`` (no module globals).

``create_app`` builds one :class:`ApiContext` per application; handlers reach it through
:func:`context_of`. The provisioner here is the runtime's, or — when the runtime's audit sink
does not already persist into the state store — a twin that also writes the persistent trail
(closed with the context).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request

from idsvc.audit import AuditSink
from idsvc.config import Settings
from idsvc.provisioning import Provisioner
from idsvc.state import StateStore

if TYPE_CHECKING:
    from idsvc.api.metrics import ApiMetrics
    from idsvc.api.security import Network, SlidingLimiter
    from idsvc.app_passwords import AppPasswords
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
    trusted_proxies: tuple[Network, ...] = ()  # api.trusted_proxies, parsed
    app_passwords: AppPasswords | None = None  # None: [app_passwords] enabled = false
    closers: list[Callable[[], None]] = field(default_factory=list)  # e.g. the web's stores

    def close(self) -> None:
        for closer in self.closers:
            closer()
        if self.provisioner is not self.runtime.provisioner:
            self.provisioner.close()


def context_of(request: Request) -> ApiContext:
    ctx = request.app.state.idsvc
    assert isinstance(ctx, ApiContext)
    return ctx
