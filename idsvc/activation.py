"""Listening sockets handed over by systemd socket activation (``LISTEN_PID``/``LISTEN_FDS``).

Why: a socket that systemd (a ``.socket`` unit) holds outlives ``idsvc serve``. Connections that
arrive while idsvc restarts wait in the socket's accept queue and are answered by the next
``idsvc serve``, so a restart (an upgrade, a configuration change) loses no request: the old
process answers what it accepted, the new one everything after.

What it does: :func:`listen_fds` takes the descriptors passed from fd 3 on when ``LISTEN_PID`` is
this process (and removes the variables, so nothing started later takes them too);
:class:`Activated` matches them to the configured listeners by address: a UNIX socket by its
path, a TCP socket by the address ``bind_tcp`` would bind. A configured listener without a
passed socket is bound as usual; a passed socket that matches no listener is logged and left
alone. Passed socket files belong to systemd: idsvc never unlinks them.

How it fails: malformed ``LISTEN_*`` values are logged and ignored (idsvc then binds itself).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from idsvc.wire.listen import BoundSocket, ListenError, parse_host_port

log = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3


def listen_fds(env: MutableMapping[str, str] | None = None) -> list[socket.socket]:
    """The sockets systemd passed to this process (empty when none or not for us)."""
    env = os.environ if env is None else env
    pid, count = env.get("LISTEN_PID"), env.get("LISTEN_FDS")
    if not pid or not count:
        return []
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if not pid.isdigit() or not count.isdigit():
        log.warning("ignoring malformed LISTEN_PID/LISTEN_FDS (%r, %r)", pid, count)
        return []
    if int(pid) != os.getpid():
        return []
    socks = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count)):
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            log.warning("descriptor %d passed by systemd is not a socket: %s", fd, exc)
            continue
        os.set_inheritable(fd, False)
        sock.setblocking(False)
        socks.append(sock)
    return socks


def _tcp_key(address: str) -> tuple[str, int]:
    host, port = parse_host_port(address)
    infos = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV
    )
    sockaddr = infos[0][4]
    return str(sockaddr[0]), int(sockaddr[1])


@dataclass
class Activated:
    """Passed sockets by address, taken (once) by the listeners that match them."""

    unix: dict[Path, socket.socket] = field(default_factory=dict)
    tcp: dict[tuple[str, int], socket.socket] = field(default_factory=dict)

    @classmethod
    def from_sockets(cls, socks: list[socket.socket]) -> Activated:
        found = cls()
        for sock in socks:
            try:
                name = sock.getsockname()
            except OSError:
                continue
            if sock.family == socket.AF_UNIX and isinstance(name, str) and name:
                found.unix[Path(name)] = sock
            elif sock.family in (socket.AF_INET, socket.AF_INET6):
                found.tcp[(str(name[0]), int(name[1]))] = sock
            else:
                log.warning("socket passed by systemd is neither UNIX nor TCP: %r", name)
        return found

    @classmethod
    def from_environment(cls) -> Activated:
        return cls.from_sockets(listen_fds())

    def __bool__(self) -> bool:
        return bool(self.unix or self.tcp)

    def take_unix(self, path: Path) -> BoundSocket | None:
        """The passed socket for ``path`` (no file identity: it is never unlinked)."""
        sock = self.unix.pop(Path(path), None)
        if sock is None:
            return None
        log.info("using the socket passed by systemd for %s", path)
        return BoundSocket(sock, path=Path(path))

    def take_tcp(self, address: str) -> BoundSocket | None:
        try:
            key = _tcp_key(address)
        except (ListenError, OSError):
            return None
        sock = self.tcp.pop(key, None)
        if sock is None:
            return None
        log.info("using the socket passed by systemd for %s", address)
        return BoundSocket(sock, host=key[0], port=key[1])

    def report_unused(self) -> None:
        for path in self.unix:
            log.warning("socket %s passed by systemd matches no enabled listener", path)
        for host, port in self.tcp:
            log.warning("socket %s:%d passed by systemd matches no enabled listener", host, port)
