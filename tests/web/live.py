"""A real idsvc for browser tests: uvicorn (``ApiServer``) on 127.0.0.1 with the web pages, plus
the saslauthd and Dovecot auth sockets on the same auth core, all on an event loop in a thread
of its own (the browser is driven with Playwright's blocking API from the test's thread).

``run`` executes a coroutine on the server's loop (to provision users, read state, or drive
``testsaslauthd``/``doveadm`` against the sockets).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, BrowserContext, sync_playwright

from idsvc.api.server import ApiServer
from idsvc.config import EmbeddedSettings
from idsvc.directory.sqlite import SqliteDirectory
from idsvc.model import Secret
from idsvc.overlay import OverlayStore
from idsvc.runtime import Runtime
from idsvc.state import StateStore, create_token
from tests.integration import dovecot_auth_support as dva
from tests.integration import saslauthd_support as sas
from tests.web.conftest import PASSWORD, web_runtime, web_settings

START_TIMEOUT = 30.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class LiveIdsvc:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.sockets = Path(tempfile.mkdtemp(prefix="idsvc-web-"))  # short: UNIX path limit
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stack = contextlib.AsyncExitStack()
        self.url = ""
        self.admin_token = ""
        self.runtime: Runtime | None = None
        self.state: StateStore | None = None

    def run(self, coro: Awaitable[Any], timeout: float = START_TIMEOUT) -> Any:
        async def wrap() -> Any:
            return await coro

        fut: Future[Any] = asyncio.run_coroutine_threadsafe(wrap(), self._loop)
        return fut.result(timeout)

    def start(self) -> LiveIdsvc:
        self._thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        settings = web_settings(self.work, listen="127.0.0.1:0")
        directory = await SqliteDirectory.open(
            EmbeddedSettings(path=self.work / "state" / "idsvc.db", busy_timeout=1.0)
        )
        self._stack.push_async_callback(directory.close)
        overlay = await OverlayStore.open(self.work / "overlay.db")
        self._stack.push_async_callback(overlay.close)
        self.runtime = runtime = await web_runtime(settings, directory, overlay)
        self._stack.push_async_callback(runtime.authenticator.close)
        self.state = await StateStore.open_for(settings)
        self._stack.push_async_callback(self.state.close)
        _, self.admin_token = await create_token(self.state, name="live-admin", scope="admin")
        server = ApiServer(settings, runtime, self.state)
        await server.start()
        self._stack.push_async_callback(server.close)
        assert server.url is not None
        self.url = server.url
        auth = runtime.authenticator
        await self._stack.enter_async_context(sas.running(self.sockets / "mux", auth))
        await self._stack.enter_async_context(dva.running(auth, self.sockets / "auth-client"))

    def user(self, address: str, password: str = PASSWORD) -> None:
        assert self.runtime is not None
        prov = self.runtime.provisioner
        domain = address.rpartition("@")[2]

        async def make() -> None:
            with contextlib.suppress(Exception):
                await prov.create_domain(domain, actor="test")
            await prov.create_user(address, actor="test", password=Secret(password))

        self.run(make())

    def stop(self) -> None:
        try:
            self.run(self._stack.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            shutil.rmtree(self.sockets, ignore_errors=True)


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium under Playwright (``playwright install`` cannot download here), with
    a fresh temporary profile (Playwright's default for ``launch``)."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS])
        try:
            yield browser
        finally:
            browser.close()


def new_context(browser: Browser, *, phone: bool = False) -> BrowserContext:
    if phone:
        return browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                   is_mobile=True, has_touch=True)  # fmt: skip
    return browser.new_context(viewport={"width": 1280, "height": 860})
