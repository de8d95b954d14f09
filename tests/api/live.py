"""A real ``ApiServer`` (uvicorn on 127.0.0.1, port chosen by the kernel) in a thread of its
own, with its own event loop, directory, runtime and state store. For tests that drive the API
with a blocking client (schemathesis, curl) and for the benchmark.

``open_directory`` runs on the server's loop, so a backend's loop-bound resources stay on it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any

from idsvc.api.server import ApiServer
from idsvc.config import Settings
from idsvc.runtime import Runtime
from idsvc.state import StateStore, create_token
from tests.api.conftest import build_runtime_over

START_TIMEOUT = 30.0


class LiveApi:
    def __init__(self, settings: Settings, open_directory: Callable[[], Awaitable[Any]]) -> None:
        self.settings = settings
        self._open_directory = open_directory
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.url = ""
        self.admin_token = ""
        self.runtime: Runtime | None = None
        self.state: StateStore | None = None
        self.server: ApiServer | None = None

    def run(self, coro: Awaitable[Any], timeout: float = START_TIMEOUT) -> Any:
        """Run a coroutine on the server's loop and wait for its result."""

        async def wrap() -> Any:
            return await coro

        fut: Future[Any] = asyncio.run_coroutine_threadsafe(wrap(), self._loop)
        return fut.result(timeout)

    def start(self) -> LiveApi:
        self._thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        directory = await self._open_directory()
        self.runtime = await build_runtime_over(self.settings, directory)
        self.state = await StateStore.open_for(self.settings)
        _, self.admin_token = await create_token(self.state, name="live-admin", scope="admin")
        self.server = ApiServer(self.settings, self.runtime, self.state)
        await self.server.start()
        assert self.server.url is not None
        self.url = self.server.url

    async def _stop(self) -> None:
        if self.server is not None:
            await self.server.close()
        if self.runtime is not None:
            await self.runtime.authenticator.close()
            await self.runtime.directory.close()
        if self.state is not None:
            await self.state.close()

    def stop(self) -> None:
        try:
            self.run(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
