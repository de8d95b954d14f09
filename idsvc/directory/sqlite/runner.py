"""Run blocking sqlite3 work off the event loop: a bounded thread pool, one connection per thread.

What it does: ``run(fn, mode)`` executes ``fn(connection)`` on a worker thread of a
``ThreadPoolExecutor`` with ``workers`` threads. Each thread opens its own connection on first use
and only that thread uses it. ``mode`` wraps the call: ``"write"`` in ``BEGIN IMMEDIATE … COMMIT``
(the write lock is taken up front, so a read-check-write sequence is atomic and a failure rolls
everything back), ``"snapshot"`` in a deferred read transaction (several SELECTs see one state),
``"plain"`` in nothing (a single statement is atomic by itself). At most ``max_pending`` calls may
be queued or running; beyond that the call fails temporarily instead of queueing without bound.

What it does not: know any SQL of the directory.

How it fails: ``sqlite3`` errors are mapped by ``errors.map_error`` inside the worker; a call after
``close()`` raises ``DirectoryError``; an overload raises ``TemporaryFailure``. ``close()`` waits
for running calls, joins the threads, then closes every connection (from the closing thread, which
is safe because the owner threads no longer exist).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, TypeVar

from idsvc.directory.sqlite.errors import map_error
from idsvc.directory.sqlite.schema import connect
from idsvc.errors import DirectoryError, TemporaryFailure

T = TypeVar("T")
Mode = Literal["write", "snapshot", "plain"]

PENDING_PER_WORKER = 256


class Runner:
    """The executor and the per-thread connections of one embedded store."""

    def __init__(self, path: Path, busy_timeout: float, workers: int) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="idsvc-sqlite")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._pending = 0
        self.max_pending = workers * PENDING_PER_WORKER
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def run(self, fn: Callable[[sqlite3.Connection], T], mode: Mode) -> T:
        """``fn(connection)`` on a worker thread, inside the transaction ``mode`` asks for."""
        return await self.call(lambda: self._with_connection(fn, mode))

    async def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` on a worker thread without a connection (file preparation)."""
        with self._lock:
            if self._closed:
                raise DirectoryError("the embedded store is closed")
            if self._pending >= self.max_pending:
                raise TemporaryFailure("embedded store overloaded: too many pending requests")
            self._pending += 1
        try:
            future = self._executor.submit(fn)
        except RuntimeError as exc:  # shut down by close() from another thread
            self._done(None)
            raise DirectoryError("the embedded store is closed") from exc
        # counted until the thread is done, even if the awaiting task is cancelled meanwhile
        future.add_done_callback(self._done)
        return await asyncio.wrap_future(future)

    def _done(self, _future: object) -> None:
        with self._lock:
            self._pending -= 1

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, self._busy_timeout)
            with self._lock:
                self._connections.append(conn)
            self._local.conn = conn
        return conn

    def _with_connection(self, fn: Callable[[sqlite3.Connection], T], mode: Mode) -> T:
        try:
            conn = self._connection()
            if mode == "plain":
                return fn(conn)
            conn.execute("BEGIN IMMEDIATE" if mode == "write" else "BEGIN")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            return result
        except sqlite3.Error as exc:
            raise map_error(exc) from exc

    async def close(self) -> None:
        """Refuse new calls, wait for running ones, join the threads, close the connections."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is open; a failing rollback must not hide the first error."""
    if conn.in_transaction:
        # SQLite may already have rolled back by itself (e.g. after SQLITE_FULL)
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
