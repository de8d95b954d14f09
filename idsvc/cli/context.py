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
    async def state(self) -> AsyncIterator[StateStore]:
        """The REST API's state store (tokens, persistent audit), open for one command.

        A store that cannot be opened is an error: changes must not go unaudited.
        """
        from idsvc.state import StateStore

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
                from idsvc.state import runtime_audit

                audit = runtime_audit(await stack.enter_async_context(self.state()))
            runtime = await build_runtime(self.settings, audit=audit, notify_server=True)
            stack.push_async_callback(runtime.close)
            yield runtime
