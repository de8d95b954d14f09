"""``dovecot-uidlist``: the per-folder file that gives every message a persistent UID, in
Dovecot's version 3 format so Dovecot (and we) can read what the other wrote::

    3 V<uidvalidity> N<next uid> G<128-bit guid hex>
    <uid> :<base file name>
    <uid> :<base file name>

The base name is the Maildir file name without its ``:2,`` info (flags change, the base does
not). Extension fields between the UID and ``:`` (Dovecot writes ``W<size>`` and the like) are
kept when read and ignored.

Writers hold ``dovecot-uidlist.lock`` (created with ``O_EXCL``, Dovecot's dot-lock name, so a
Dovecot on the same Maildir serialises with us); a lock older than :data:`STALE_LOCK` seconds is
broken. New records are appended under the lock; a full rewrite goes through the lock file itself,
renamed over the list (which also releases the lock), in the Maildir's own directory, so a
``$TMPDIR`` on another file system does not matter. :func:`parse` and :func:`format_list` are
pure.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from mailsvc.maildir import StoreError

UIDLIST = "dovecot-uidlist"
LOCK = "dovecot-uidlist.lock"
STALE_LOCK = 120.0
LOCK_WAIT = 30.0
MAX_UID = 2**32 - 1


class UidlistError(StoreError):
    """The list is unreadable or cannot be locked: a temporary failure (``NO [UNAVAILABLE]``)."""


@dataclass
class Uidlist:
    uidvalidity: int
    next_uid: int
    guid: str = ""
    records: dict[str, int] = field(default_factory=dict)  # base name → uid

    @property
    def header(self) -> str:
        guid = f" G{self.guid}" if self.guid else ""
        return f"3 V{self.uidvalidity} N{self.next_uid}{guid}\n"


def parse(text: str) -> Uidlist | None:
    """The list in ``text``; ``None`` when it is not a version 3 list (it is then rebuilt)."""
    lines = text.split("\n")
    head = lines[0].split()
    if not head or head[0] != "3":
        return None
    fields = {f[0]: f[1:] for f in head[1:] if f}
    try:
        uidvalidity = int(fields["V"])
        next_uid = int(fields.get("N", "1"))
    except (KeyError, ValueError):
        return None
    if not 0 < uidvalidity <= MAX_UID:
        return None
    result = Uidlist(uidvalidity, max(next_uid, 1), fields.get("G", ""))
    for line in lines[1:]:
        if not line:
            continue
        uid_text, sep, rest = line.partition(" ")
        colon = rest.find(":")
        if not sep or colon < 0 or not uid_text.isdigit():
            continue  # a torn last line from a crashed writer
        uid = int(uid_text)
        name = rest[colon + 1 :]
        if not 0 < uid <= MAX_UID or not name or "/" in name:
            continue
        result.records[name] = uid
        if uid >= result.next_uid:
            result.next_uid = uid + 1
    return result


def record(uid: int, base: str) -> str:
    return f"{uid} :{base}\n"


def format_list(uidlist: Uidlist, records: Iterable[tuple[int, str]]) -> str:
    return uidlist.header + "".join(record(uid, base) for uid, base in records)


class Lock:
    """A held dot-lock: ``fd`` of the lock file; ``released`` once :func:`rewrite` renamed it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.released = False


@contextlib.contextmanager
def locked(dirfd: int, wait: float = LOCK_WAIT) -> Iterator[Lock]:
    """Hold the dot-lock in the folder open as ``dirfd``."""
    deadline = time.monotonic() + wait
    delay = 0.002
    while True:
        try:
            fd = os.open(
                LOCK, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                dir_fd=dirfd,
            )  # fmt: skip
            break
        except FileExistsError:
            with contextlib.suppress(OSError):
                info = os.stat(LOCK, dir_fd=dirfd, follow_symlinks=False)
                if time.time() - info.st_mtime > STALE_LOCK:
                    os.unlink(LOCK, dir_fd=dirfd)
                    continue
            if time.monotonic() > deadline:
                raise UidlistError("dovecot-uidlist is locked") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        except OSError as exc:
            raise UidlistError(f"cannot lock dovecot-uidlist: {exc.strerror}") from exc
    lock = Lock(fd)
    try:
        yield lock
    finally:
        os.close(fd)
        if not lock.released:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(LOCK, dir_fd=dirfd)


def read(dirfd: int) -> Uidlist | None:
    try:
        fd = os.open(UIDLIST, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UidlistError(f"cannot read dovecot-uidlist: {exc.strerror}") from exc
    try:
        chunks: list[bytes] = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return parse(b"".join(chunks).decode("utf-8", "replace"))


def append(dirfd: int, lines: str) -> None:
    """Append records (the caller holds the lock)."""
    fd = os.open(UIDLIST, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    try:
        view = memoryview(lines.encode())
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def rewrite(dirfd: int, lock: Lock, text: str, *, fsync: bool) -> None:
    """Replace the list with ``text`` through the lock file (the caller holds ``lock``; the
    rename releases it)."""
    view = memoryview(text.encode())
    os.ftruncate(lock.fd, 0)
    while view:
        view = view[os.write(lock.fd, view) :]
    if fsync:
        os.fsync(lock.fd)
    os.rename(LOCK, UIDLIST, src_dir_fd=dirfd, dst_dir_fd=dirfd)
    lock.released = True
