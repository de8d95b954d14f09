"""What a sub-command runs with: the settings, the output mode and (opened on demand) the runtime.

``Context.runtime()`` is an async context manager that builds the directory, hasher, authenticator
and provisioner from the settings and closes them again, so a command that does not need the
directory (``pw``, ``config check``) never opens it. Imports of the runtime happen lazily for the
same reason.

The audit trail of CLI changes goes to the ``idsvc.audit`` logger (shown with ``--verbose``) and,
when the state store of the REST API is available, into its persistent audit table too.
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
    from idsvc.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass
class Context:
    settings: Settings
    config_path: Path | None
    json: bool = False
    verbose: bool = False

    @contextlib.asynccontextmanager
    async def runtime(self) -> AsyncIterator[Runtime]:
        """The opened runtime for the duration of one command."""
        from idsvc.runtime import build_runtime

        runtime = await build_runtime(self.settings)
        try:
            yield runtime
        finally:
            await runtime.close()
