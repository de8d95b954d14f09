"""Maildir++ store: durable delivery and ``maildirsize`` quota, shared by the SMTP front end (and
later POP3/IMAP). Synchronous file-system code: callers run it on a worker thread.

Layout: one vmail root owned by one unprivileged user; each mailbox is a directory under it
named by the ``mailbox`` map (a path relative to the root, e.g. ``example.org/alice/``) holding
``tmp/ new/ cur/`` and, when a quota applies, ``maildirsize``.

Delivery (:meth:`Maildir.deliver`), the order that makes "250" mean "on disk":

1. open ``tmp/<unique>`` with ``O_CREAT|O_EXCL|O_NOFOLLOW`` (mode 0600);
2. write every byte, then ``fsync`` the file;
3. ``rename`` it to ``new/<unique>,S=<size>,W=<size>`` and ``fsync`` ``new/``;
4. append ``<size> 1`` to ``maildirsize`` (when a quota applies).

A failure in steps 1-3 removes the temporary file, raising :class:`StoreError`; nothing partial is
ever visible in ``new/`` or ``cur/`` because only a complete, synced file is renamed there. A
crash in between leaves at most a file in ``tmp/``, which readers never look at (and
:meth:`Maildir.sweep_tmp` removes after 36 hours, as the Maildir spec says).

Every directory below the root is opened component by component with ``O_NOFOLLOW`` and all file
operations are relative to those directory descriptors, so a symlink planted inside the vmail
root cannot redirect a delivery elsewhere; a mailbox path with ``..``, an absolute path or an
empty component is refused (:class:`BadMailboxPath`).

Unique names follow the Maildir spec: ``<sec>.M<usec>P<pid>Q<n>R<random>.<host>``.

Quota (``maildirsize``, the Maildir++ quota file Dovecot's ``quota = maildir`` also reads and
writes): the first line is ``<bytes>S[,<count>C]``, then one ``<bytes> <count>`` line per change.
Usage is the sum of those lines. The file is recalculated from the messages in ``new/`` and
``cur/`` (of the mailbox and its ``.Folders``) when it is missing, its limits differ from the
configured ones, it grows over 5120 bytes or is older than 15 minutes and was not rewritten since.

Test hook: ``crash_at`` (``MAILSVC_TEST_CRASH_AT`` in ``mailsvc serve``) names a step at which the
process kills itself with SIGKILL (``tmp-open``, ``tmp-written``, ``tmp-synced``, ``renamed``,
``dir-synced``); only the crash tests set it.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import secrets
import signal
import socket
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

SUBDIRS = ("tmp", "new", "cur")
QUOTA_FILE = "maildirsize"
QUOTA_MAX_FILE = 5120
QUOTA_STALE = 15 * 60.0
TMP_MAX_AGE = 36 * 3600.0
VERIFIED_MAX = 10_000  # mailboxes remembered as complete (tmp/ new/ cur/ exist)
CRASH_STEPS = ("tmp-open", "tmp-written", "tmp-synced", "renamed", "dir-synced")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SIZE_IN_NAME = re.compile(r",S=([0-9]+)")
_COMPONENT = re.compile(r"[A-Za-z0-9._+=@!#$%&'*?^`{|}~-]{1,255}")  # atext without '/'


class StoreError(Exception):
    """A delivery or quota operation failed (disk full, I/O error …): a temporary failure."""


class BadMailboxPath(StoreError):
    """The mailbox path escapes the vmail root or is not a plain relative path."""


@dataclass(frozen=True)
class Quota:
    """Limits for one mailbox; 0 means no limit."""

    bytes: int = 0
    count: int = 0

    @property
    def unlimited(self) -> bool:
        return self.bytes <= 0 and self.count <= 0

    def header(self) -> str:
        parts = [f"{self.bytes}S"] if self.bytes > 0 else []
        if self.count > 0:
            parts.append(f"{self.count}C")
        return ",".join(parts)


@dataclass(frozen=True)
class Usage:
    bytes: int
    count: int

    def exceeds(self, quota: Quota, extra_bytes: int = 0, extra_count: int = 0) -> bool:
        """True when adding ``extra_*`` would go over ``quota`` (at the limit counts as over
        for a further message of any size, i.e. ``extra_bytes=0`` asks "already full?")."""
        if quota.bytes > 0:
            if extra_bytes == 0 and self.bytes >= quota.bytes:
                return True
            if extra_bytes and self.bytes + extra_bytes > quota.bytes:
                return True
        if quota.count > 0:
            if extra_count == 0 and self.count >= quota.count:
                return True
            if extra_count and self.count + extra_count > quota.count:
                return True
        return False


def parse_relative(path: str) -> tuple[str, ...]:
    """The components of a mailbox path relative to the vmail root (``BadMailboxPath``)."""
    parts = tuple(p for p in path.split("/") if p)
    if path.startswith("/") or not parts or len(parts) > 16:
        raise BadMailboxPath("mailbox path must be relative to the vmail root")
    for part in parts:
        if part in (".", "..") or not _COMPONENT.fullmatch(part):
            raise BadMailboxPath("mailbox path has an invalid component")
    return parts


Chunk = bytes | IO[bytes]  # bytes, or a readable binary file (read from its start)
COPY_BLOCK = 1 << 20


def chunk_size(chunk: Chunk) -> int:
    if isinstance(chunk, bytes):
        return len(chunk)
    return chunk.seek(0, os.SEEK_END)


def _write_chunk(fd: int, chunk: Chunk) -> None:
    if isinstance(chunk, bytes):
        _write_all(fd, chunk)
        return
    chunk.seek(0)
    while block := chunk.read(COPY_BLOCK):
        _write_all(fd, block)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class MaildirStore:
    """The vmail root; :meth:`mailbox` opens (creating when asked) one Maildir under it."""

    def __init__(
        self,
        root: Path,
        *,
        hostname: str | None = None,
        fsync: bool = True,
        crash_at: str | None = None,
    ) -> None:
        self.root = Path(root)
        host = hostname or socket.gethostname()
        self.host = host.replace("/", "\\057").replace(":", "\\072")
        self.fsync = fsync
        if crash_at is not None and crash_at not in CRASH_STEPS:
            raise ValueError(f"unknown crash step {crash_at!r}")
        self.crash_at = crash_at
        self._seq = itertools.count(1)
        self._complete: set[tuple[str, ...]] = set()  # mailboxes known to have their subdirs

    def check_root(self) -> None:
        """Create the root (0700) if missing; refuse a root that is a symlink or not a dir."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(self.root)
        if not stat.S_ISDIR(info.st_mode):
            raise StoreError(f"vmail root {self.root} is not a directory")

    def free_bytes(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def unique(self) -> str:
        now = time.time()
        sec = int(now)
        usec = int((now - sec) * 1_000_000)
        return f"{sec}.M{usec}P{os.getpid()}Q{next(self._seq)}R{secrets.token_hex(8)}.{self.host}"

    def unverified(self, parts: tuple[str, ...]) -> bool:
        """True until :meth:`verified` was told this mailbox has its ``tmp/ new/ cur/`` (so a
        delivery does not try three ``mkdir`` every time)."""
        return parts not in self._complete

    def verified(self, parts: tuple[str, ...]) -> None:
        if len(self._complete) >= VERIFIED_MAX:
            self._complete.clear()  # bounded: forgetting only costs three mkdir attempts
        self._complete.add(parts)

    def forget(self, parts: tuple[str, ...]) -> None:
        """A subdirectory went missing (removed behind our back): check it again next time."""
        self._complete.discard(parts)

    def crash_point(self, step: str) -> None:
        if self.crash_at == step:
            os.kill(os.getpid(), signal.SIGKILL)

    def mailbox(self, relative: str, *, create: bool = True) -> Maildir:
        return Maildir(self, parse_relative(relative), create=create)


class Maildir:
    """One Maildir++ mailbox under a :class:`MaildirStore` (see the module docstring)."""

    def __init__(self, store: MaildirStore, parts: tuple[str, ...], *, create: bool) -> None:
        self.store = store
        self.parts = parts
        self.path = store.root.joinpath(*parts)
        self._create = create

    @contextlib.contextmanager
    def _dirfd(self) -> Iterator[int]:
        """A descriptor of the mailbox directory, reached without following any symlink."""
        try:
            fd = os.open(self.store.root, _DIR_FLAGS)
        except OSError as exc:
            raise StoreError(f"vmail root unavailable: {exc.strerror}") from exc
        try:
            created = False
            for part in self.parts:
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not self._create:
                        raise
                    with contextlib.suppress(FileExistsError):  # another thread was first
                        os.mkdir(part, 0o700, dir_fd=fd)
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                    created = True
                os.close(fd)
                fd = nxt
            if self._create and (created or self.store.unverified(self.parts)):
                for sub in SUBDIRS:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(sub, 0o700, dir_fd=fd)
                self.store.verified(self.parts)
            yield fd
        except OSError as exc:
            if exc.errno == errno.ELOOP or exc.errno == errno.ENOTDIR:
                raise BadMailboxPath("mailbox path crosses a symlink or a file") from exc
            raise StoreError(f"cannot open mailbox: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def open_dir(self) -> contextlib.AbstractContextManager[int]:
        """A descriptor of this Maildir's directory (no symlink followed on the way)."""
        return self._dirfd()

    def folder(self, directory: str, *, create: bool = False) -> Maildir:
        """The Maildir++ subfolder ``directory`` (``.Name``, already checked by the caller)."""
        if not directory:
            return self
        if "/" in directory or directory in (".", ".."):
            raise BadMailboxPath("bad folder directory")
        return Maildir(self.store, (*self.parts, directory), create=create)

    def quota_add(self, quota: Quota, size: int, count: int) -> None:
        """Record a change of ``size`` bytes / ``count`` messages in ``maildirsize``."""
        if quota.unlimited:
            return
        with self._dirfd() as box:
            self._quota_add(box, quota, size, count)

    def write_tmp(self, tmp: int, name: str, chunks: Sequence[Chunk]) -> None:
        """Write ``chunks`` durably to ``tmp/<name>`` (``tmp`` is that directory's fd)."""
        self._write_tmp(tmp, name, chunks)

    def exists(self) -> bool:
        try:
            with self._dirfd():
                return True
        except StoreError:
            return False

    # --- delivery -------------------------------------------------------------------------

    def deliver(self, chunks: Sequence[Chunk], quota: Quota | None = None) -> str:
        """Write ``chunks`` (bytes or binary files) as one new message; its name in ``new/``
        once durable."""
        size = sum(chunk_size(c) for c in chunks)
        store = self.store
        base = store.unique()
        final = f"{base},S={size},W={size}"
        with self._dirfd() as box:
            try:
                tmp = os.open("tmp", _DIR_FLAGS, dir_fd=box)
            except FileNotFoundError:
                store.forget(self.parts)
                raise
            try:
                new = os.open("new", _DIR_FLAGS, dir_fd=box)
            except FileNotFoundError:
                os.close(tmp)
                store.forget(self.parts)
                raise
            try:
                self._write_tmp(tmp, base, chunks)
                try:
                    os.rename(base, final, src_dir_fd=tmp, dst_dir_fd=new)
                except OSError as exc:
                    with contextlib.suppress(OSError):
                        os.unlink(base, dir_fd=tmp)
                    raise StoreError(f"cannot move message into new/: {exc.strerror}") from exc
                store.crash_point("renamed")
                if store.fsync:
                    try:
                        os.fsync(new)
                    except OSError as exc:
                        # the rename may not be durable: take the message back out of new/
                        with contextlib.suppress(OSError):
                            os.unlink(final, dir_fd=new)
                        raise StoreError(f"cannot sync new/: {exc.strerror}") from exc
                store.crash_point("dir-synced")
            finally:
                os.close(tmp)
                os.close(new)
            if quota is not None and not quota.unlimited:
                self._quota_add(box, quota, size, 1)
        return final

    def withdraw(self, name: str, quota: Quota | None = None) -> bool:
        """Take back a message this process just put in ``new/`` (its transaction failed
        before the client was told 250); False when a reader already moved it."""
        size_match = _SIZE_IN_NAME.search(name)
        with self._dirfd() as box:
            try:
                os.unlink(f"new/{name}", dir_fd=box)
            except OSError:
                return False
            if quota is not None and not quota.unlimited and size_match:
                self._quota_add(box, quota, -int(size_match.group(1)), -1)
        return True

    def _write_tmp(self, tmp: int, name: str, chunks: Sequence[Chunk]) -> None:
        store = self.store
        try:
            fd = os.open(
                name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                dir_fd=tmp,
            )  # fmt: skip
        except OSError as exc:
            raise StoreError(f"cannot create message file: {exc.strerror}") from exc
        store.crash_point("tmp-open")
        try:
            for chunk in chunks:
                _write_chunk(fd, chunk)
            store.crash_point("tmp-written")
            if store.fsync:
                os.fsync(fd)
            store.crash_point("tmp-synced")
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=tmp)
            raise StoreError(f"cannot write message: {exc.strerror}") from exc
        os.close(fd)

    def sweep_tmp(self, max_age: float = TMP_MAX_AGE) -> int:
        """Remove files in ``tmp/`` older than ``max_age`` seconds; how many were removed."""
        removed = 0
        now = time.time()
        with self._dirfd() as box:
            tmp = os.open("tmp", _DIR_FLAGS, dir_fd=box)
            try:
                for name in os.listdir(tmp):
                    with contextlib.suppress(OSError):
                        info = os.stat(name, dir_fd=tmp, follow_symlinks=False)
                        if now - info.st_mtime > max_age:
                            os.unlink(name, dir_fd=tmp)
                            removed += 1
            finally:
                os.close(tmp)
        return removed

    # --- quota ----------------------------------------------------------------------------

    def usage(self, quota: Quota) -> Usage:
        """Current usage per ``maildirsize`` (recalculated when stale)."""
        with self._dirfd() as box:
            return self._quota_read(box, quota)

    def _quota_read(self, box: int, quota: Quota) -> Usage:
        try:
            fd = os.open(QUOTA_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=box)
        except FileNotFoundError:
            return self._recalculate(box, quota)
        except OSError as exc:
            raise StoreError(f"cannot read maildirsize: {exc.strerror}") from exc
        try:
            info = os.fstat(fd)
            data = os.read(fd, QUOTA_MAX_FILE * 4)
        finally:
            os.close(fd)
        lines = data.decode("ascii", "replace").splitlines()
        stale = (
            not lines
            or lines[0].strip() != quota.header()
            or info.st_size > QUOTA_MAX_FILE
            or (len(lines) > 1 and time.time() - info.st_mtime > QUOTA_STALE)
        )
        if stale:
            return self._recalculate(box, quota)
        total_bytes = total_count = 0
        for line in lines[1:]:
            fields = line.split()
            if len(fields) != 2:
                return self._recalculate(box, quota)
            try:
                total_bytes += int(fields[0])
                total_count += int(fields[1])
            except ValueError:
                return self._recalculate(box, quota)
        return Usage(max(total_bytes, 0), max(total_count, 0))

    def _scan(self, box: int) -> Usage:
        total_bytes = total_count = 0
        folders = ["."] + [n for n in os.listdir(box) if n.startswith(".") and n not in (".", "..")]
        for folder in folders:
            for sub in ("new", "cur"):
                rel = sub if folder == "." else f"{folder}/{sub}"
                try:
                    fd = os.open(rel, _DIR_FLAGS, dir_fd=box)
                except OSError:
                    continue
                try:
                    for name in os.listdir(fd):
                        found = _SIZE_IN_NAME.search(name)
                        if found:
                            size = int(found.group(1))
                        else:
                            try:
                                size = os.stat(name, dir_fd=fd, follow_symlinks=False).st_size
                            except OSError:
                                continue  # expunged meanwhile
                        total_bytes += size
                        total_count += 1
                finally:
                    os.close(fd)
        return Usage(total_bytes, total_count)

    def _recalculate(self, box: int, quota: Quota) -> Usage:
        usage = self._scan(box)
        text = f"{quota.header()}\n{usage.bytes:>12} {usage.count:>12}\n".encode("ascii")
        name = f"{QUOTA_FILE}.{self.store.unique()}"
        try:
            tmp = os.open("tmp", _DIR_FLAGS, dir_fd=box)
            try:
                fd = os.open(
                    name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=tmp
                )
                try:
                    _write_all(fd, text)
                finally:
                    os.close(fd)
                os.rename(name, QUOTA_FILE, src_dir_fd=tmp, dst_dir_fd=box)
            finally:
                os.close(tmp)
        except OSError as exc:
            raise StoreError(f"cannot write maildirsize: {exc.strerror}") from exc
        return usage

    def _quota_add(self, box: int, quota: Quota, size: int, count: int) -> None:
        try:
            fd = os.open(
                QUOTA_FILE, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=box
            )
        except FileNotFoundError:
            self._recalculate(box, quota)  # counts the message just delivered
            return
        except OSError:
            return  # the message is delivered; the next read recalculates
        try:
            with contextlib.suppress(OSError):
                _write_all(fd, f"{size} {count}\n".encode("ascii"))
        finally:
            os.close(fd)
