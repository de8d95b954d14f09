"""Listening sockets for the asyncio wire servers, a per-server connection limiter, peer names.

What it does:

* :func:`bind_unix` creates a UNIX stream socket at ``SocketSettings.path``: the parent directory
  is created (0755) when missing; an existing path is replaced only when it is a socket that
  nobody answers on (a stale leftover of a crashed daemon); the explicit ``mode``, ``owner`` and
  ``group`` are applied after ``bind()`` and *before* ``listen()``, so no client can connect
  through a socket with the wrong permissions.
* :func:`bind_tcp` binds ``host:port`` (``[v6]:port`` too; port 0 picks a free port, readable as
  ``BoundSocket.port`` for tests).
* :class:`ConnectionLimiter` counts a server's open connections; each server closes a
  connection over the limit at once without a byte (every Postfix-facing protocol reads a close
  as "temporary failure").
* :func:`peer_of` names the peer for logs: ``pid/uid/gid`` from ``SO_PEERCRED`` on UNIX sockets,
  ``ip:port`` on TCP.

What it does not do: run the servers, read or write protocol bytes, apply timeouts (each server
does all three), or decide policy from the peer's identity (rule 9: nothing is trusted because
of where it comes from).

How it fails: every start-up problem (address in use, live socket at the path, a non-socket file at
the path, unknown owner or group, path too long, permission denied) raises :class:`ListenError`
with the path or address in the message. Nothing here raises while serving.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import logging
import os
import pwd
import socket
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from idsvc.config import SocketSettings
from idsvc.errors import IdsvcError

log = logging.getLogger(__name__)

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_UNIX_PATH = 107
DEFAULT_BACKLOG = 128
# how long the stale-socket probe waits for a connect() on an existing path
_PROBE_TIMEOUT = 0.5


class ListenError(IdsvcError):
    """A listening socket could not be created; the message names the path or address."""


@dataclass(slots=True)
class BoundSocket:
    """A bound (and listening) socket, ready for ``loop.create_(unix_)server(sock=...)``.

    ``path`` is set for UNIX sockets, ``host``/``port`` for TCP. :meth:`remove_path` deletes the
    socket file only if the path still refers to the file this socket created (another process
    may have replaced it since).
    """

    sock: socket.socket
    path: Path | None = None
    host: str | None = None
    port: int | None = None
    _ident: tuple[int, int] | None = field(default=None, repr=False)

    def describe(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"

    def remove_path(self) -> None:
        if self.path is None or self._ident is None:
            return
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == self._ident:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def _resolve_uid(owner: str | None) -> int:
    if owner is None:
        return -1
    if owner.isdigit():
        return int(owner)
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise ListenError(f"unknown socket owner {owner!r}") from None


def _resolve_gid(group: str | None) -> int:
    if group is None:
        return -1
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ListenError(f"unknown socket group {group!r}") from None


def _ensure_parent(path: Path) -> None:
    parent = path.parent
    if parent.is_dir():
        return
    try:
        parent.mkdir(parents=True, mode=0o755)
        os.chmod(parent, 0o755)  # noqa: S103 - the brief's mode; mkdir's is filtered by umask
    except FileExistsError:
        if not parent.is_dir():
            raise ListenError(f"{parent} exists and is not a directory") from None
    except OSError as exc:
        raise ListenError(f"cannot create directory {parent}: {exc.strerror}") from exc


def _clear_stale(path: Path) -> None:
    """Remove ``path`` if it is a socket nobody listens on; refuse anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(_PROBE_TIMEOUT)
    try:
        probe.connect(os.fspath(path))
    except (ConnectionRefusedError, FileNotFoundError):
        pass  # stale: nothing answers
    except TimeoutError:
        # a full backlog or a hung owner: someone is there, leave it alone
        raise ListenError(f"{path} is a live socket (connect timed out)") from None
    except OSError as exc:
        raise ListenError(f"cannot probe existing socket {path}: {exc.strerror}") from exc
    else:
        raise ListenError(f"{path} is in use by another server")
    finally:
        probe.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    log.info("removed stale socket %s", path)


def bind_unix(settings: SocketSettings, *, backlog: int = DEFAULT_BACKLOG) -> BoundSocket:
    """Create, secure and listen on the UNIX stream socket described by ``settings``."""
    path = Path(settings.path)
    if not path.is_absolute():
        raise ListenError(f"socket path must be absolute: {path}")
    if len(os.fsencode(path)) > MAX_UNIX_PATH:
        raise ListenError(f"socket path longer than {MAX_UNIX_PATH} bytes: {path}")
    uid, gid = _resolve_uid(settings.owner), _resolve_gid(settings.group)
    _ensure_parent(path)
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.bind(os.fspath(path))
        except OSError as exc:
            raise ListenError(f"cannot bind {path}: {exc.strerror}") from exc
        st = os.lstat(path)
        bound = BoundSocket(sock, path=path, _ident=(st.st_dev, st.st_ino))
        try:
            if uid != -1 or gid != -1:
                os.chown(path, uid, gid, follow_symlinks=False)
            os.chmod(path, settings.mode)
        except OSError as exc:
            bound.remove_path()
            raise ListenError(f"cannot set owner/mode of {path}: {exc.strerror}") from exc
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return bound


def parse_host_port(text: str) -> tuple[str, int]:
    """Split ``host:port`` or ``[v6]:port``; raises ListenError on anything else."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or len(port_text) > 5:
        raise ListenError(f"expected host:port, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ListenError(f"IPv6 addresses need brackets: {text!r}")
    port = int(port_text)
    if port > 65535:
        raise ListenError(f"port out of range in {text!r}")
    return host, port


def bind_tcp(address: str, *, backlog: int = DEFAULT_BACKLOG) -> BoundSocket:
    """Bind and listen on ``host:port`` (port 0: the kernel picks; read it from ``.port``)."""
    host, port = parse_host_port(address)
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV
        )
    except socket.gaierror as exc:
        raise ListenError(f"cannot resolve {address!r}: {exc.strerror}") from exc
    family, socktype, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, socktype, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            why = "address in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise ListenError(f"cannot bind {address}: {why}") from exc
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    bound_host, bound_port = sock.getsockname()[:2]
    return BoundSocket(sock, host=bound_host, port=bound_port)


class ConnectionLimiter:
    """Counts a server's open connections; :meth:`try_acquire` refuses beyond ``limit``."""

    __slots__ = ("_active", "limit", "refused")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("connection limit must be at least 1")
        self.limit = limit
        self._active = 0
        self.refused = 0

    @property
    def active(self) -> int:
        return self._active

    def try_acquire(self) -> bool:
        if self._active >= self.limit:
            self.refused += 1
            return False
        self._active += 1
        return True

    def release(self) -> None:
        if self._active <= 0:
            raise RuntimeError("ConnectionLimiter released more often than acquired")
        self._active -= 1


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is on the other end, for logs only."""

    ip: str | None = None
    port: int | None = None
    pid: int | None = None
    uid: int | None = None
    gid: int | None = None

    def __str__(self) -> str:
        if self.ip is not None:
            return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"
        if self.pid is not None:
            return f"pid={self.pid} uid={self.uid} gid={self.gid}"
        return "unknown"


_UCRED = struct.Struct("3i")


class HasExtraInfo(Protocol):
    """A transport or a stream writer: anything that answers ``get_extra_info``."""

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


def peer_of(conn: HasExtraInfo) -> Peer:
    """Peer credentials (UNIX, via SO_PEERCRED) or address (TCP) of a connection."""
    sock = conn.get_extra_info("socket")
    if sock is None:
        return Peer()
    try:
        if sock.family == socket.AF_UNIX:
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
            pid, uid, gid = _UCRED.unpack(raw)
            return Peer(pid=pid, uid=uid, gid=gid)
        peer = conn.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            return Peer(ip=str(peer[0]), port=int(peer[1]))
    except (OSError, struct.error):
        pass
    return Peer()
