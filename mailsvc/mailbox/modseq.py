"""``mailsvc-modseq``: the per-folder file that makes modification sequences (RFC 7162
CONDSTORE/QRESYNC) persistent and shared between processes, beside ``dovecot-uidlist``::

    1 V<uidvalidity> H<highest modseq> E<expunge floor>
    <uid> <modseq> :<info letters>     the message's flags (its ":2," letters) as of <modseq>
    <uid> <modseq> X                   the message was expunged at <modseq>

Records are appended; the last record of a UID wins. Every writer holds the ``dovecot-uidlist``
dot-lock (:func:`mailsvc.mailbox.uidlist.locked`), reads what others appended since it last
looked, and only then allocates the next modseq, so two processes (or a restart) never hand out
the same value twice and agree on each message's value. The file is rewritten (through a
temporary file renamed over it, under the same lock) when it grows past twice the live records.

Expunge records are kept for at most :data:`MAX_VANISHED` UIDs; when older ones are dropped the
header's ``E`` (the floor) rises: a client resynchronising from a modseq below the floor is
answered conservatively (every UID it may know that no longer exists).

:func:`parse_header`, :func:`parse_records` and :func:`format_file` are pure.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from mailsvc.maildir import StoreError

MODSEQ_FILE = "mailsvc-modseq"
TMP_FILE = "mailsvc-modseq.tmp"
MAX_VANISHED = 50_000
MAX_MODSEQ = 2**63 - 1
_OPEN = os.O_NOFOLLOW | os.O_CLOEXEC
_LETTERS = re.compile(r":[A-Za-z]*")


class ModseqError(StoreError):
    """The file cannot be read or written: a temporary failure (``NO [UNAVAILABLE]``)."""


@dataclass
class Header:
    uidvalidity: int
    highest: int
    floor: int

    def format(self) -> str:
        return f"1 V{self.uidvalidity} H{self.highest} E{self.floor}\n"


@dataclass(frozen=True)
class Record:
    uid: int
    modseq: int
    letters: str | None  # None: expunged


def parse_header(line: str) -> Header | None:
    """The first line; ``None`` when it is not a version 1 header (the file is then rebuilt)."""
    words = line.split()
    if not words or words[0] != "1":
        return None
    fields = {w[0]: w[1:] for w in words[1:] if w}
    try:
        header = Header(int(fields["V"]), int(fields["H"]), int(fields.get("E", "0")))
    except (KeyError, ValueError):
        return None
    if header.highest < 0 or header.highest > MAX_MODSEQ or not 0 <= header.floor <= MAX_MODSEQ:
        return None
    return header


def parse_records(text: str) -> list[Record]:
    """Complete record lines of ``text`` (a torn or malformed line is skipped)."""
    out: list[Record] = []
    for line in text.split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            continue
        uid, modseq = int(parts[0]), int(parts[1])
        if not 0 < uid < 2**32 or not 0 < modseq <= MAX_MODSEQ:
            continue
        tail = parts[2]
        if tail == "X":
            out.append(Record(uid, modseq, None))
        elif _LETTERS.fullmatch(tail):
            out.append(Record(uid, modseq, tail[1:]))
    return out


def record(rec: Record) -> str:
    tail = "X" if rec.letters is None else ":" + rec.letters
    return f"{rec.uid} {rec.modseq} {tail}\n"


def format_file(header: Header, records: Iterable[Record]) -> str:
    return header.format() + "".join(record(r) for r in records)


@dataclass
class Chunk:
    """What :func:`read_from` found: ``header`` when reading from the start."""

    header: Header | None
    records: list[Record]
    offset: int  # where the next read continues (after the last complete line)
    inode: int
    rebuilt: bool = False  # the file was replaced (or is new): ``records`` is everything


def read_from(dirfd: int, offset: int, inode: int) -> Chunk | None:
    """Records appended since ``offset`` of the file with ``inode``; from the start when the
    file was replaced meanwhile. ``None`` when there is no file."""
    try:
        fd = os.open(MODSEQ_FILE, os.O_RDONLY | _OPEN, dir_fd=dirfd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ModseqError(f"cannot read {MODSEQ_FILE}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        rebuilt = info.st_ino != inode or info.st_size < offset
        start = 0 if rebuilt else offset
        chunks: list[bytes] = []
        pos = start
        while chunk := os.pread(fd, 1 << 20, pos):
            chunks.append(chunk)
            pos += len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    complete = data.rfind(b"\n") + 1
    text = data[:complete].decode("ascii", "replace")
    header = None
    if rebuilt:
        first, _, text = text.partition("\n")
        header = parse_header(first)
        if header is None:
            return Chunk(None, [], start + complete, info.st_ino, rebuilt=True)
    return Chunk(header, parse_records(text), start + complete, info.st_ino, rebuilt)


def append(dirfd: int, records: Iterable[Record]) -> None:
    """Append records (the caller holds the uidlist lock)."""
    data = "".join(record(r) for r in records).encode()
    if not data:
        return
    try:
        fd = os.open(MODSEQ_FILE, os.O_WRONLY | os.O_APPEND | _OPEN, dir_fd=dirfd)
    except OSError as exc:
        raise ModseqError(f"cannot append to {MODSEQ_FILE}: {exc.strerror}") from exc
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def rewrite(dirfd: int, text: str, *, fsync: bool) -> int:
    """Replace the file with ``text`` (the caller holds the uidlist lock); the new inode."""
    try:
        fd = os.open(TMP_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _OPEN, 0o600,
                     dir_fd=dirfd)  # fmt: skip
        try:
            view = memoryview(text.encode())
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
            inode = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        os.rename(TMP_FILE, MODSEQ_FILE, src_dir_fd=dirfd, dst_dir_fd=dirfd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(TMP_FILE, dir_fd=dirfd)
        raise ModseqError(f"cannot write {MODSEQ_FILE}: {exc.strerror}") from exc
    return inode
