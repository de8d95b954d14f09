"""Where a client connects: ``unix:/path`` (or a bare absolute path) or ``inet:host:port``.

Postfix spells its socket tables the same way (``socketmap:unix:/path:name``), so operators can
paste the same addresses into both configurations.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mailsvc.clients.errors import Unavailable


@dataclass(frozen=True)
class Target:
    """A parsed connect address: a UNIX socket ``path`` or a TCP ``host`` and ``port``."""

    path: str | None = None
    host: str | None = None
    port: int = 0

    @classmethod
    def parse(cls, text: str) -> Target:
        """``unix:/abs/path``, ``/abs/path`` or ``inet:host:port`` (``[v6]:port`` allowed)."""
        if text.startswith("unix:"):
            text = text[5:]
        if text.startswith("/"):
            return cls(path=text)
        if text.startswith("inet:"):
            host, sep, port = text[5:].rpartition(":")
            host = host.strip("[]")
            if sep and host and port.isdigit() and 0 < int(port) < 65536:
                return cls(host=host, port=int(port))
        raise ValueError(f"expected unix:/path or inet:host:port, got {text!r}")

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"inet:{self.host}:{self.port}"

    async def connect(
        self, within: float, limit: int = 65536
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a stream connection within ``within`` seconds; :class:`Unavailable` on failure."""
        try:
            async with asyncio.timeout(within):
                if self.path is not None:
                    return await asyncio.open_unix_connection(self.path, limit=limit)
                return await asyncio.open_connection(self.host, self.port, limit=limit)
        except (OSError, TimeoutError) as exc:
            raise Unavailable(f"cannot connect to {self}: {exc or 'timeout'}") from exc
