"""Dovecot auth-client protocol, client side, for the load client (``--protocol dovecot``).

What it does: one persistent connection per worker, as one Postfix ``smtpd`` process keeps it:
``VERSION``/``CPID`` once, read the handshake up to ``DONE``, then per attempt one
``AUTH … PLAIN … resp=`` (flagged ``no-penalty``, so Dovecot's anvil penalty stays out of
benchmarks) with ids 1, 2, 3 … and read the reply for that id. ``True`` = OK (the reply must
carry ``user=``), ``False`` = FAIL, ``None`` = no usable answer (closed, timeout, garbage) — after
which the connection is dropped and the next attempt reconnects, as Postfix does.

What it does not do: other mechanisms, pipelining several requests on one connection, or reach
anything but a UNIX socket path or a loopback ``host:port``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os

MAX_LINE = 16384


class DovecotClient:
    def __init__(self, target: str, service: str, timeout: float) -> None:
        self.target = target
        self.service = service
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._next_id = 1

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.target.startswith("/"):
            reader, writer = await asyncio.open_unix_connection(self.target, limit=MAX_LINE + 1)
        else:
            host, _, port = self.target.rpartition(":")
            reader, writer = await asyncio.open_connection(host, int(port), limit=MAX_LINE + 1)
        writer.write(f"VERSION\t1\t0\nCPID\t{os.getpid()}\n".encode())
        mechs: list[str] = []
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("closed during handshake")
            fields = line.rstrip(b"\n").split(b"\t")
            if fields[0] == b"VERSION" and fields[1:2] != [b"1"]:
                raise ConnectionError("unsupported server version")
            if fields[0] == b"MECH":
                mechs.append(fields[1].decode().upper())
            if fields[0] == b"DONE":
                break
        if "PLAIN" not in mechs:
            raise ConnectionError("server does not offer PLAIN")
        self._next_id = 1
        return reader, writer

    async def check(self, login: str, password: str) -> bool | None:
        try:
            async with asyncio.timeout(self.timeout):
                if self._reader is None or self._writer is None:
                    self._reader, self._writer = await self._connect()
                rid = self._next_id
                self._next_id += 1
                resp = base64.b64encode(b"\0" + login.encode() + b"\0" + password.encode())
                self._writer.write(
                    b"AUTH\t%d\tPLAIN\tservice=%s\tnologin\tlip=127.0.0.1\trip=127.0.0.1"
                    b"\tsecured\tno-penalty\tresp=%s\n" % (rid, self.service.encode(), resp)
                )
                line = await self._reader.readline()
        except (OSError, TimeoutError, ValueError):
            await self.close()
            return None
        fields = line.rstrip(b"\n").split(b"\t")
        if len(fields) < 2 or fields[1] != str(rid).encode():
            await self.close()
            return None
        if fields[0] == b"OK" and any(f.startswith(b"user=") for f in fields[2:]):
            return True
        if fields[0] == b"FAIL":
            return False
        await self.close()
        return None

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
