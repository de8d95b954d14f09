"""Where a web session's logged-in IMAP conversation waits for that session's next page.

One slot per web session (keyed by its id), at most ``limit`` slots, each emptied ``keep``
seconds after it was filled (a timer closes the conversation with LOGOUT). ``take`` empties the
slot (a conversation is never used by two pages at once: a second concurrent page of the same
session opens its own, and of the two the first to finish is parked, the other logged out).
``drop`` empties it at logout. ``keep = 0`` parks nothing: one conversation per page.

Nothing here talks IMAP except through the ``closer`` it is given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class Park:
    def __init__(
        self, keep: float, limit: int, closer: Callable[[Any], Coroutine[Any, Any, None]]
    ) -> None:
        self.keep = keep
        self.limit = limit
        self._closer = closer
        self._slots: dict[str, tuple[Any, asyncio.TimerHandle]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._slots)

    def take(self, key: str) -> Any | None:
        found = self._slots.pop(key, None)
        if found is None:
            return None
        client, timer = found
        timer.cancel()
        return client

    def put(self, key: str, client: Any) -> bool:
        """Park ``client`` for ``key``; False (the caller closes it) when parking is off, the
        slot is taken or the park is full."""
        if self.keep <= 0 or key in self._slots or len(self._slots) >= self.limit:
            return False
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.keep, self._expire, key, client)
        self._slots[key] = (client, timer)
        return True

    def _expire(self, key: str, client: Any) -> None:
        found = self._slots.get(key)
        if found is not None and found[0] is client:
            del self._slots[key]
            self._close_later(client)

    def drop(self, key: str) -> None:
        client = self.take(key)
        if client is not None:
            self._close_later(client)

    def _close_later(self, client: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._closer(client))
        self._closing.add(task)  # keep a reference until it is done
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close every parked conversation (shutdown)."""
        for key in list(self._slots):
            client = self.take(key)
            if client is not None:
                await self._closer(client)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
