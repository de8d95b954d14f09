"""What a sub-command runs with: the settings, the output mode and (opened on demand) the runtime.

``Context.runtime()`` is an async context manager that builds the directory, hasher, authenticator
and provisioner from the settings and closes them again, so a command that does not need the
directory (``pw``, ``config check``) never opens it. Imports of the runtime happen lazily for the
same reason.

The audit trail of CLI changes goes to the ``idsvc.audit`` logger (shown with ``--verbose``) and
into the persistent audit table of the state store (``idsvc.state``, shared with the REST API),
so ``GET /api/v1/audit`` shows changes made with the CLI too; read-only commands skip the store.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from idsvc.config import Settings

if TYPE_CHECKING:
    from idsvc.audit import AuditSink
    from idsvc.runtime import Runtime
    from idsvc.state import StateStore

log = logging.getLogger(__name__)


@dataclass
class Context:
    settings: Settings
    config_path: Path | None
    json: bool = False
    verbose: bool = False

    @contextlib.asynccontextmanager
    async def state(self) -> AsyncIterator[StateStore | None]:
        """The REST API's state store (tokens, persistent audit), or None when not in this build.

        A store that exists but cannot be opened is an error: changes must not go unaudited.
        """
        try:
            from idsvc.state import StateStore
        except ModuleNotFoundError as exc:
            if exc.name is not None and exc.name.startswith("idsvc"):
                yield None
                return
            raise
        store = await StateStore.open_for(self.settings)
        try:
            yield store
        finally:
            await store.close()

    @contextlib.asynccontextmanager
    async def runtime(self, *, audited: bool = False) -> AsyncIterator[Runtime]:
        """The opened runtime for the duration of one command. With ``audited`` every audit event
        is also persisted in the state store (what ``GET /api/v1/audit`` shows)."""
        from idsvc.runtime import build_runtime

        async with contextlib.AsyncExitStack() as stack:
            audit: AuditSink | None = None
            if audited:
                store = await stack.enter_async_context(self.state())
                if store is not None:
                    from idsvc.state import runtime_audit

                    audit = runtime_audit(store)
            runtime = await build_runtime(self.settings, audit=audit, notify_server=True)
            stack.push_async_callback(runtime.close)
            yield runtime
