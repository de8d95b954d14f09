"""The worker's end of the supervisor channel: flushes are applied and confirmed in order,
malformed lines are answered ERR, this worker's own changes go up, and EOF stops the worker."""

from __future__ import annotations

import asyncio
import socket

from idsvc.workers import WorkerChannel


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def invalidate(self, user: str | None = None) -> None:
        self.calls.append(("user", user))

    def invalidate_domain(self, domain: str) -> None:
        self.calls.append(("domain", domain))


async def read_lines(sock: socket.socket, count: int) -> list[bytes]:
    loop = asyncio.get_running_loop()
    data = b""
    while data.count(b"\n") < count:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
        assert chunk, "channel closed early"
        data += chunk
    return data.split(b"\n")[:count]


async def test_flushes_are_applied_and_confirmed() -> None:
    supervisor, worker = socket.socketpair()
    supervisor.setblocking(False)
    lost: list[str] = []
    channel = WorkerChannel(worker, lost.append)
    recorder = Recorder()
    channel.attach(recorder)
    await channel.start()
    try:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(
            supervisor, b"FLUSH USER Bob@Example.ORG\nFLUSH DOMAIN example.org\nNONSENSE\nFLUSH\n"
        )
        replies = await read_lines(supervisor, 4)
        assert replies[0] == b"OK"
        assert replies[1] == b"OK"
        assert replies[2].startswith(b"ERR")
        assert replies[3] == b"OK"
        assert recorder.calls == [
            ("user", "bob@example.org"),
            ("domain", "example.org"),
            ("user", None),
        ]
        channel.ready(["saslauthd", "dovecot-auth"])
        channel.invalidate("carl@example.org")  # this worker's own change, for the others
        channel.invalidate_domain("example.net")
        up = await read_lines(supervisor, 3)
        assert up == [
            b"READY saslauthd,dovecot-auth",
            b"FLUSH USER carl@example.org",
            b"FLUSH DOMAIN example.net",
        ]
        supervisor.close()  # the supervisor is gone
        for _ in range(100):
            if lost:
                break
            await asyncio.sleep(0.01)
        assert lost == ["the supervisor is gone"]
    finally:
        await channel.close()
