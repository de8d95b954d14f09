"""One mail folder (a Maildir): UIDs, flags, message bytes — the state POP3 and IMAP sessions
share, in this process, for the same folder.

:class:`Folder` keeps the folder's index in memory (UID → base file name, flags, where the file
is) and re-reads the directory only when ``new/`` or ``cur/`` changed (their mtimes moved, or
were too recent to trust), so a command on an unchanged 100k-message folder costs two ``stat``
calls, not a directory scan. New files found in ``new/`` or ``cur/`` get UIDs under the
``dovecot-uidlist`` lock (SMTP delivery and other processes only rename files into ``new/``; they
never need the lock), so concurrent sessions and deliveries never hand out a UID twice.

Every change (flags, expunge, new message) gets a modification sequence, persistent and shared
between processes through ``mailsvc-modseq`` (:mod:`mailsvc.mailbox.modseq`), written in the
same locked transaction as the uid list (:meth:`Folder._transaction`): messages carry the modseq
of their last change, expunged UIDs are remembered with theirs (bounded), and sessions compare
them with what they last reported to send ``FETCH`` / ``VANISHED`` updates (RFC 7162);
:meth:`Folder.wait_change` wakes IDLE. All methods are synchronous file-system code guarded by
one lock per folder: callers run them on a worker thread.

Message bytes are read exactly as stored; parsed MIME structures are cached per message in a
bounded LRU (:class:`~mailsvc.mailbox.cache.MessageCache`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from mailsvc.mailbox import flags as fl
from mailsvc.mailbox import modseq as ms
from mailsvc.mailbox import uidlist
from mailsvc.maildir import Maildir, Quota, StoreError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_SIZE = re.compile(r",S=([0-9]+)")
_VSIZE = re.compile(r",W=([0-9]+)")
TRUST_AFTER_NS = 2_000_000_000  # a directory mtime this recent may hide a same-tick change
MAX_APPEND = 64 * 1024 * 1024


class FolderError(StoreError):
    """The folder is gone or unusable."""


@dataclass(eq=False)
class Message:
    uid: int
    base: str
    subdir: str  # "new" or "cur"
    letters: str  # the ":2," info letters as on disk
    flags: frozenset[str]
    modseq: int
    size: int | None = None
    vsize: int | None = None
    mtime: float | None = None

    @property
    def filename(self) -> str:
        return fl.filename(self.base, self.letters) if self.subdir == "cur" else self.base

    @property
    def relpath(self) -> str:
        return f"{self.subdir}/{self.filename}"


@dataclass
class Appended:
    uid: int
    base: str


@dataclass
class _Scan:
    new_mtime: int = -1
    cur_mtime: int = -1
    at_ns: int = 0


@dataclass
class _Txn:
    """One change under the ``dovecot-uidlist`` lock: the uid list as read, the modseq every
    change in it gets (:meth:`stamp`), and the records to write when it ends."""

    box: int
    lock: uidlist.Lock
    current: uidlist.Uidlist
    rewrite_uidlist: bool
    next_modseq: int
    records: list[ms.Record] = field(default_factory=list)
    added: list[tuple[int, str]] = field(default_factory=list)
    used: bool = False
    reset: bool = False  # a new UIDVALIDITY: what disappears is not an expunge to remember

    def stamp(self) -> int:
        self.used = True
        return self.next_modseq


@dataclass
class StoreResult:
    """What :meth:`Folder.store_flags` did: UIDs whose flags changed, UIDs refused by
    ``UNCHANGEDSINCE``, the modseq the changes got (0: none), and the folder's modseq just
    before them — equal to ``modseq - 1`` when nothing else changed in between, so a session
    that had reported everything up to ``previous`` need not report these changes again."""

    changed: list[int]
    refused: list[int]
    modseq: int
    previous: int = 0


@dataclass
class FolderState:
    """A snapshot handed to a session: sorted UIDs, and what changed."""

    uidvalidity: int
    next_uid: int
    modseq: int
    uids: list[int] = field(default_factory=list)


class Folder:
    """See the module docstring. Obtain through :class:`~mailsvc.mailbox.store.MailStore`."""

    def __init__(self, maildir: Maildir, root: Maildir, name: str, *, fsync: bool = True) -> None:
        self.maildir = maildir
        self.root = root  # where maildirsize lives
        self.name = name
        self.fsync = fsync
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.uidvalidity = 0
        self.next_uid = 1
        self.modseq = 1
        self.messages: dict[int, Message] = {}  # uid → message
        self.by_base: dict[str, Message] = {}
        self.sorted_uids: list[int] = []
        self.keywords: list[str] = []
        self.recent_floor = 0  # UIDs at or above: \Recent for the next session that claims them
        self.watchers: list[Callable[[], None]] = []
        self.in_new: set[int] = set()
        self.vanished: dict[int, int] = {}  # expunged uid → its modseq (bounded)
        self.vanished_floor = 0  # expunges at or below this modseq may be forgotten
        self._pending: dict[int, tuple[int, str]] = {}  # file records not matched to our view
        self._moffset = 0  # how far mailsvc-modseq was read
        self._minode = -1
        self._mcount = 0  # records in the file
        self._mrewrite = False
        self._ulist: tuple[tuple[int, int, int], uidlist.Uidlist] | None = None
        self._scan = _Scan()
        self._loaded = False

    # --- directory access ---------------------------------------------------------------

    @contextlib.contextmanager
    def dirfd(self) -> Iterator[int]:
        with self.maildir.open_dir() as fd:  # the store's no-symlink walk
            yield fd

    def open_fd(self) -> int:
        """A descriptor of the folder's directory that the caller closes (reads in a batch or
        for a whole session; a renamed folder keeps working through it)."""
        with self.dirfd() as fd:
            return os.dup(fd)

    # --- sync -----------------------------------------------------------------------------

    def sync(self, *, move_new: bool = True, force: bool = False) -> bool:
        """Bring the index up to date with the directory; True when anything changed."""
        with self.lock, self.dirfd() as box:
            try:
                new_mtime = os.stat("new", dir_fd=box, follow_symlinks=False).st_mtime_ns
                cur_mtime = os.stat("cur", dir_fd=box, follow_symlinks=False).st_mtime_ns
            except OSError as exc:
                raise FolderError(f"folder unusable: {exc.strerror}") from exc
            scan = self._scan
            stable = (
                self._loaded
                and not force
                and new_mtime == scan.new_mtime
                and cur_mtime == scan.cur_mtime
                and scan.at_ns - max(new_mtime, cur_mtime) > TRUST_AFTER_NS
            )
            if stable:
                if move_new and self.in_new:
                    for uid in list(self.in_new):
                        self._move_to_cur(box, self.messages[uid])
                return False
            started = time.time_ns()
            changed = self._rescan(box, move_new)
            # our own moves changed the mtimes: record them, still untrusted (newer than the
            # scan) until a later scan confirms nothing else arrived meanwhile
            with contextlib.suppress(OSError):
                new_mtime = os.stat("new", dir_fd=box, follow_symlinks=False).st_mtime_ns
                cur_mtime = os.stat("cur", dir_fd=box, follow_symlinks=False).st_mtime_ns
            self._scan = _Scan(new_mtime, cur_mtime, started)
            if changed:
                self._notify()
            return changed

    def _listdir(self, box: int, sub: str) -> list[str]:
        try:
            fd = os.open(sub, _DIR_FLAGS, dir_fd=box)
        except OSError as exc:
            raise FolderError(f"cannot open {sub}/: {exc.strerror}") from exc
        try:
            return [n for n in os.listdir(fd) if not n.startswith(".")]
        finally:
            os.close(fd)

    def _rescan(self, box: int, move_new: bool, txn: _Txn | None = None) -> bool:
        if not self._loaded:
            self.keywords = fl.read_keywords(box)
        on_disk: dict[str, tuple[str, str]] = {}
        # new/ first: a file another session moves new/ -> cur/ between the two listings is
        # then seen in cur/ (listed the other way round it was in neither, and a new message
        # went missing from this scan); seen in both, cur/ is where it is
        for name in self._listdir(box, "new"):
            on_disk[name] = ("new", "")
        for name in self._listdir(box, "cur"):
            base, letters = fl.split_name(name)
            on_disk[base] = ("cur", letters)
        missing = [b for b in self.by_base if b not in on_disk]
        if missing:  # renamed within cur/ (flags) while we listed it? look again before dropping
            for name in self._listdir(box, "cur"):
                base, letters = fl.split_name(name)
                on_disk.setdefault(base, ("cur", letters))
        gone = [self.by_base[b] for b in missing if b not in on_disk]
        moved: list[tuple[Message, str, str]] = []
        for base, (sub, letters) in on_disk.items():
            known = self.by_base.get(base)
            if known is not None and (known.subdir, known.letters) != (sub, letters):
                moved.append((known, sub, letters))
        fresh = sorted((b for b in on_disk if b not in self.by_base), key=delivery_order)
        changed = bool(gone or moved or fresh)
        if changed or not self._loaded:
            with contextlib.ExitStack() as stack:
                if txn is None:
                    txn = stack.enter_context(self._transaction(box))
                self._apply_scan(txn, gone, moved)
                self._assign(txn, fresh, on_disk)
                if not self._loaded:
                    self._sweep_orphans(txn)
        self.in_new = {m.uid for m in self.messages.values() if m.subdir == "new"}
        if move_new:
            for uid in list(self.in_new):
                self._move_to_cur(box, self.messages[uid])
        self.sorted_uids = sorted(self.messages)
        self._loaded = True
        return changed

    def _apply_scan(
        self, txn: _Txn, gone: list[Message], moved: list[tuple[Message, str, str]]
    ) -> None:
        """Expunges and flag changes made by someone else: adopt the modseq they recorded,
        or record one."""
        for msg in gone:
            if self.by_base.get(msg.base) is not msg:
                continue
            del self.by_base[msg.base]
            del self.messages[msg.uid]
            self.in_new.discard(msg.uid)
            self._pending.pop(msg.uid, None)
            if msg.uid not in self.vanished and not txn.reset:
                self.vanished[msg.uid] = txn.stamp()
                txn.records.append(ms.Record(msg.uid, txn.next_modseq, None))
        for msg, sub, letters in moved:
            msg.subdir = sub
            if msg.letters == letters:
                continue
            msg.letters = letters
            msg.flags = fl.decode(letters, self.keywords)
            self._settle(txn, msg)

    def _sweep_orphans(self, txn: _Txn) -> None:
        """First load: recorded messages whose files are gone were expunged while no mailsvc
        process watched (a plain Maildir client, Dovecot): remember them as expunged now. The
        directory is listed again under the lock, where no UID can be handed out meanwhile."""
        orphans = [u for u in self._pending if u not in self.messages]
        if not orphans:
            return
        bases = {uid: base for base, uid in txn.current.records.items()}
        present = {fl.split_name(name)[0] for sub in ("cur", "new")
                   for name in self._listdir(txn.box, sub)}  # fmt: skip
        for uid in orphans:
            base = bases.get(uid)
            if base is None or base not in present:
                del self._pending[uid]
                self.vanished[uid] = txn.stamp()
                txn.records.append(ms.Record(uid, txn.next_modseq, None))

    def _settle(self, txn: _Txn, msg: Message) -> None:
        """``msg`` is new to us or its letters changed: take the modseq another process
        recorded for exactly this state, else give it the transaction's."""
        found = self._pending.pop(msg.uid, None)
        if found is not None and found[1] == msg.letters and found[0] > msg.modseq:
            msg.modseq = found[0]
            return
        msg.modseq = txn.stamp()
        txn.records.append(ms.Record(msg.uid, msg.modseq, msg.letters))

    @contextlib.contextmanager
    def _transaction(self, box: int) -> Iterator[_Txn]:
        """Hold the ``dovecot-uidlist`` lock, catch up with both files, and write what the
        body recorded (modseq records first: a uid list rewrite releases the lock)."""
        with uidlist.locked(box) as lock:
            current = self._read_uidlist(box)
            rewrite = False
            if current is None or (self._loaded and current.uidvalidity != self.uidvalidity):
                if current is not None:
                    raise FolderError("UIDVALIDITY changed under us")
                current = uidlist.Uidlist(int(time.time()), 1, secrets.token_hex(16))
                rewrite = True
                if self._loaded:  # the list was removed (the folder recreated): start afresh
                    self.next_uid, self.recent_floor = 1, 0
                # expunges remembered under the old UIDVALIDITY mean nothing under the new one
                self.vanished, self.vanished_floor, self._pending = {}, 0, {}
            self.uidvalidity = current.uidvalidity
            self._catch_up(box)
            if self._mrewrite and not rewrite and not self._loaded:
                # an existing folder without (readable) modseqs: whatever values clients saw
                # before are unknown, so start above any counter plausibly handed out (one per
                # millisecond since 1970) and forget every expunge below it
                self.modseq = max(self.modseq, time.time_ns() // 1_000_000)
                self.vanished_floor = max(self.vanished_floor, self.modseq)
            txn = _Txn(box, lock, current, rewrite, self.modseq + 1, reset=rewrite)
            try:
                yield txn
            finally:
                if txn.used:
                    self.modseq = txn.next_modseq
                self._commit_modseq(txn)
                self._commit_uidlist(txn)

    def _read_uidlist(self, box: int) -> uidlist.Uidlist | None:
        """The uid list (lock held), parsed again only when the file changed since we last
        parsed it (a flag change or expunge does not touch it: no O(folder) parse for those)."""
        try:
            info = os.stat(uidlist.UIDLIST, dir_fd=box, follow_symlinks=False)
        except FileNotFoundError:
            self._ulist = None
            return None
        except OSError as exc:
            raise FolderError(f"cannot stat dovecot-uidlist: {exc.strerror}") from exc
        key = (info.st_ino, info.st_size, info.st_mtime_ns)
        cached = self._ulist
        if cached is None or cached[0] != key:
            parsed = uidlist.read(box)
            if parsed is None:
                self._ulist = None
                return None
            cached = self._ulist = (key, parsed)
        found = cached[1]  # a copy: _assign moves next_uid on; the records stay as read
        return uidlist.Uidlist(found.uidvalidity, found.next_uid, found.guid, found.records)

    def _catch_up(self, box: int) -> None:
        """Apply the records other processes appended to ``mailsvc-modseq`` (lock held)."""
        chunk = ms.read_from(box, self._moffset, self._minode)
        if chunk is None:
            self._mrewrite = True
            return
        if chunk.rebuilt:
            header = chunk.header
            if header is None or header.uidvalidity != self.uidvalidity:
                self._mrewrite = True  # unreadable or of an earlier UIDVALIDITY: ours replaces it
                self._moffset, self._minode = chunk.offset, chunk.inode
                return
            self.modseq = max(self.modseq, header.highest)
            self.vanished_floor = max(self.vanished_floor, header.floor)
            self._mcount = 0
        self._moffset, self._minode = chunk.offset, chunk.inode
        self._mcount += len(chunk.records)
        for rec in chunk.records:
            if rec.modseq > self.modseq:
                self.modseq = rec.modseq
            if rec.letters is None:
                self.vanished[rec.uid] = rec.modseq
                self._pending.pop(rec.uid, None)
                continue
            msg = self.messages.get(rec.uid)
            if msg is not None and msg.letters == rec.letters:
                msg.modseq = max(msg.modseq, rec.modseq)
                self._pending.pop(rec.uid, None)
            else:
                self._pending[rec.uid] = (rec.modseq, rec.letters)

    def _commit_modseq(self, txn: _Txn) -> None:
        if len(self.vanished) > ms.MAX_VANISHED:  # forget the oldest quarter, raise the floor
            by_age = sorted(self.vanished.items(), key=lambda item: item[1])
            for uid, value in by_age[: len(by_age) - ms.MAX_VANISHED * 3 // 4]:
                del self.vanished[uid]
                self.vanished_floor = max(self.vanished_floor, value)
            self._mrewrite = True
        live = len(self.messages) + len(self.vanished) + len(self._pending)
        if self._mrewrite or self._mcount + len(txn.records) > 2 * live + 1000:
            records = [ms.Record(m.uid, m.modseq, m.letters) for m in self.messages.values()]
            for uid, (value, letters) in self._pending.items():
                msg = self.messages.get(uid)
                if msg is None or value > msg.modseq:
                    records.append(ms.Record(uid, value, letters))
            records += [ms.Record(u, v, None) for u, v in self.vanished.items()]
            records.sort(key=lambda r: r.modseq)
            header = ms.Header(self.uidvalidity, self.modseq, self.vanished_floor)
            text = ms.format_file(header, records)
            self._minode = ms.rewrite(txn.box, text, fsync=self.fsync)
            self._moffset, self._mcount, self._mrewrite = len(text), len(records), False
        elif txn.records:
            ms.append(txn.box, txn.records)
            self._mcount += len(txn.records)
            self._moffset += len("".join(ms.record(r) for r in txn.records))
        txn.records = []

    def _assign(self, txn: _Txn, fresh: list[str], on_disk: dict[str, tuple[str, str]]) -> None:
        """UIDs (and modseqs) for files new to us; the uid list is written at commit."""
        current = txn.current
        known = current.records
        for base in fresh:
            uid = known.get(base)
            if uid is None or uid in self.messages:
                uid = current.next_uid
                current.next_uid += 1
                txn.added.append((uid, base))
            sub, letters = on_disk[base]
            msg = Message(uid, base, sub, letters, fl.decode(letters, self.keywords), 0)
            self._settle(txn, msg)
            self.messages[uid] = msg
            self.by_base[base] = msg
        if current.next_uid > uidlist.MAX_UID:
            raise FolderError("UIDs exhausted")
        self.next_uid = max(self.next_uid, current.next_uid)
        current.next_uid = self.next_uid

    def _commit_uidlist(self, txn: _Txn) -> None:
        current, added = txn.current, txn.added
        if txn.rewrite_uidlist or (added and len(current.records) > 2 * len(self.messages) + 1000):
            records = sorted((m.uid, m.base) for m in self.messages.values())
            text = uidlist.format_list(current, records)
            uidlist.rewrite(txn.box, txn.lock, text, fsync=self.fsync)
            current.records = {base: uid for uid, base in records}
        elif added:
            uidlist.append(txn.box, "".join(uidlist.record(u, b) for u, b in added))
            self._bump_header(txn.box, current)
            current.records.update((base, uid) for uid, base in added)
        else:
            return
        txn.added = []
        # what we wrote is what the file now says: no need to parse it again next time
        with contextlib.suppress(OSError):
            info = os.stat(uidlist.UIDLIST, dir_fd=txn.box, follow_symlinks=False)
            self._ulist = ((info.st_ino, info.st_size, info.st_mtime_ns), current)

    def _bump_header(self, box: int, current: uidlist.Uidlist) -> None:
        """Keep ``N`` in the header in step when its width allows an in-place update."""
        fd = os.open(uidlist.UIDLIST, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=box)
        try:
            head = os.pread(fd, 256, 0).split(b"\n", 1)[0]
            wanted = current.header.rstrip("\n").encode()
            if len(wanted) == len(head):
                os.pwrite(fd, wanted, 0)
        finally:
            os.close(fd)

    def _move_to_cur(self, box: int, msg: Message) -> None:
        target = fl.filename(msg.base, msg.letters)
        try:
            os.rename(f"new/{msg.base}", f"cur/{target}", src_dir_fd=box, dst_dir_fd=box)
        except FileNotFoundError:
            return  # moved or expunged by someone else: the next scan sees it
        except OSError as exc:
            raise FolderError(f"cannot move a message to cur/: {exc.strerror}") from exc
        msg.subdir = "cur"
        self.in_new.discard(msg.uid)

    def poke(self) -> None:
        """Something outside changed the directory: wake waiters (they sync)."""
        for watcher in list(self.watchers):
            with contextlib.suppress(Exception):
                watcher()

    def _notify(self) -> None:
        self.changed.notify_all()
        for watcher in list(self.watchers):
            with contextlib.suppress(Exception):
                watcher()

    # --- reading --------------------------------------------------------------------------

    def state(self) -> FolderState:
        with self.lock:
            return FolderState(self.uidvalidity, self.next_uid, self.modseq, list(self.sorted_uids))

    def claim_recent(self) -> set[int]:
        """UIDs that are \\Recent for the calling session (each UID is recent to one session)."""
        with self.lock:
            recent = {u for u in self.sorted_uids if u >= self.recent_floor}
            self.recent_floor = self.next_uid
            return recent

    def get(self, uid: int) -> Message | None:
        with self.lock:
            return self.messages.get(uid)

    def _stat(self, msg: Message) -> None:
        if msg.size is not None and msg.mtime is not None:
            return
        found = _SIZE.search(msg.base)
        vfound = _VSIZE.search(msg.base)
        for _attempt in range(2):
            try:
                with self.dirfd() as box:
                    info = os.stat(msg.relpath, dir_fd=box, follow_symlinks=False)
            except FileNotFoundError:
                self.sync(move_new=False, force=True)
                continue
            except OSError as exc:
                raise FolderError(f"cannot stat a message: {exc.strerror}") from exc
            msg.mtime = info.st_mtime
            msg.size = int(found.group(1)) if found else info.st_size
            msg.vsize = int(vfound.group(1)) if vfound else None
            return
        raise FileNotFoundError(msg.base)

    def size(self, uid: int) -> int:
        msg = self._must(uid)
        if msg.size is None and (found := _SIZE.search(msg.base)):
            msg.size = int(found.group(1))
        if msg.size is None:
            self._stat(msg)
        assert msg.size is not None
        return msg.size

    def vsize(self, uid: int) -> int:
        """The size with CRLF line ends (``,W=`` when present; else counted)."""
        msg = self._must(uid)
        if msg.vsize is None and (found := _VSIZE.search(msg.base)):
            msg.vsize = int(found.group(1))
        if msg.vsize is None:
            raw = self.read(uid)
            msg.vsize = len(raw) + raw.count(b"\n") - raw.count(b"\r\n")
        return msg.vsize

    def internaldate(self, uid: int) -> float:
        msg = self._must(uid)
        self._stat(msg)
        assert msg.mtime is not None
        return msg.mtime

    def _must(self, uid: int) -> Message:
        msg = self.get(uid)
        if msg is None:
            raise FileNotFoundError(uid)
        return msg

    def read(self, uid: int, limit: int = MAX_APPEND * 4, *, box: int | None = None) -> bytes:
        """The message exactly as stored; :class:`FileNotFoundError` when it was expunged.
        ``box``: this folder's directory, already open (a batch of reads)."""
        for _attempt in range(3):
            msg = self._must(uid)
            try:
                if box is not None:
                    fd = os.open(msg.relpath, _READ, dir_fd=box)
                else:
                    with self.dirfd() as opened:
                        fd = os.open(msg.relpath, _READ, dir_fd=opened)
            except FileNotFoundError:
                self.sync(move_new=False, force=True)  # renamed by a flag change elsewhere
                continue
            except OSError as exc:
                raise FolderError(f"cannot open a message: {exc.strerror}") from exc
            try:
                chunks: list[bytes] = []
                total = 0
                while chunk := os.read(fd, 1 << 20):
                    chunks.append(chunk)
                    total += len(chunk)
                    if total > limit:
                        raise FolderError("message larger than the read limit")
                return b"".join(chunks)
            finally:
                os.close(fd)
        raise FileNotFoundError(uid)

    # --- changing -------------------------------------------------------------------------

    def set_flags(self, uid: int, new_flags: frozenset[str]) -> bool:
        """Store ``new_flags`` (\\Recent dropped) for ``uid``; True when it changed."""
        return bool(self.store_flags([uid], "FLAGS", new_flags).changed)

    def store_flags(
        self,
        uids: Sequence[int],
        action: str,
        flag_set: frozenset[str],
        unchanged_since: int | None = None,
    ) -> StoreResult:
        """``FLAGS`` / ``+FLAGS`` / ``-FLAGS`` on ``uids`` as one change (one modseq).
        ``unchanged_since`` (RFC 7162 ``UNCHANGEDSINCE``): a message whose modseq is higher is
        left alone and listed as refused. :class:`~mailsvc.mailbox.flags.TooManyKeywords`."""
        flag_set = frozenset(f for f in flag_set if f != "\\Recent")
        changed: list[int] = []
        refused: list[int] = []
        with self.lock, self.dirfd() as box, self._transaction(box) as txn:
            previous = self.modseq  # after catching up with other processes
            for uid in uids:
                msg = self.messages.get(uid)
                if msg is None:
                    continue
                if unchanged_since is not None and msg.modseq > unchanged_since:
                    refused.append(uid)
                    continue
                if action == "FLAGS":
                    new_flags = flag_set
                elif action == "+FLAGS":
                    new_flags = msg.flags | flag_set
                else:
                    new_flags = msg.flags - flag_set
                if new_flags == msg.flags and msg.subdir == "cur":
                    continue
                letters, grew = fl.encode(new_flags, self.keywords)
                if grew:
                    fl.write_keywords(box, self.keywords)
                for _attempt in range(2):
                    try:
                        os.rename(msg.relpath, f"cur/{fl.filename(msg.base, letters)}",
                                  src_dir_fd=box, dst_dir_fd=box)  # fmt: skip
                        break
                    except FileNotFoundError:
                        self._rescan(box, False, txn)
                        found = self.messages.get(uid)
                        if found is None:
                            break
                        msg = found
                else:
                    continue
                if self.messages.get(uid) is not msg:
                    continue
                msg.subdir = "cur"
                self.in_new.discard(uid)
                if msg.letters == letters and msg.flags == new_flags:
                    continue
                msg.letters = letters
                if msg.flags != new_flags:
                    changed.append(uid)
                msg.flags = new_flags
                msg.modseq = txn.stamp()
                self._pending.pop(uid, None)
                txn.records.append(ms.Record(uid, msg.modseq, letters))
            modseq = txn.next_modseq if txn.used else 0
            if changed:
                self._notify()
        return StoreResult(changed, refused, modseq, previous)

    def expunge(self, uids: Sequence[int], quota: Quota | None = None) -> list[int]:
        """Remove ``uids``; the UIDs actually removed (by us)."""
        removed: list[int] = []
        freed = 0
        with self.lock, self.dirfd() as box, self._transaction(box) as txn:
            for uid in uids:
                msg = self.messages.get(uid)
                if msg is None:
                    continue
                with contextlib.suppress(OSError):
                    if msg.size is None:
                        self._stat(msg)
                try:
                    os.unlink(msg.relpath, dir_fd=box)
                except FileNotFoundError:
                    self._rescan(box, False, txn)
                    msg = self.messages.get(uid)
                    if msg is None:
                        continue
                    try:
                        os.unlink(msg.relpath, dir_fd=box)
                    except FileNotFoundError:
                        continue
                except OSError as exc:
                    raise FolderError(f"cannot expunge: {exc.strerror}") from exc
                del self.messages[uid]
                del self.by_base[msg.base]
                self.in_new.discard(uid)
                self._pending.pop(uid, None)
                self.vanished[uid] = txn.stamp()
                txn.records.append(ms.Record(uid, txn.next_modseq, None))
                removed.append(uid)
                freed += msg.size or 0
            if removed:
                self.sorted_uids = sorted(self.messages)
        if removed:
            with self.lock:
                self._notify()
        if removed and quota is not None and not quota.unlimited:
            self.root.quota_add(quota, -freed, -len(removed))
        return removed

    def append(
        self,
        data: bytes,
        flag_set: frozenset[str] = frozenset(),
        internaldate: float | None = None,
    ) -> Appended:
        """Store one message with flags; its UID (assigned at once)."""
        store = self.maildir.store
        size = len(data)
        vsize = size + data.count(b"\n") - data.count(b"\r\n")
        base = f"{store.unique()},S={size},W={vsize}"
        with self.lock, self.dirfd() as box:
            letters, grew = fl.encode(
                frozenset(f for f in flag_set if f != "\\Recent"), self.keywords
            )
            if grew:
                fl.write_keywords(box, self.keywords)
            final = fl.filename(base, letters)
            tmp = os.open("tmp", _DIR_FLAGS, dir_fd=box)
            try:
                self.maildir.write_tmp(tmp, base, [data])
                if internaldate is not None:
                    os.utime(base, (internaldate, internaldate), dir_fd=tmp)
                try:
                    os.rename(base, f"cur/{final}", src_dir_fd=tmp, dst_dir_fd=box)
                except OSError as exc:
                    with contextlib.suppress(OSError):
                        os.unlink(base, dir_fd=tmp)
                    raise FolderError(f"cannot store the message: {exc.strerror}") from exc
            finally:
                os.close(tmp)
            if store.fsync:
                cur = os.open("cur", _DIR_FLAGS, dir_fd=box)
                try:
                    os.fsync(cur)
                finally:
                    os.close(cur)
            with self._transaction(box) as txn:
                if not self._loaded:
                    self._rescan(box, False, txn)
                else:
                    self._assign(txn, [base], {base: ("cur", letters)})
                    self.sorted_uids = sorted(self.messages)
            msg = self.by_base[base]
            msg.size, msg.vsize = size, vsize
            self._notify()
            return Appended(msg.uid, base)

    def copy_in(self, source: Folder, uids: Sequence[int]) -> list[tuple[int, int]]:
        """Copy messages (bytes, flags, internal date) from ``source``; (old, new) UID pairs."""
        pairs: list[tuple[int, int]] = []
        for uid in uids:
            msg = source.get(uid)
            if msg is None:
                continue
            try:
                data = source.read(uid)
                date = source.internaldate(uid)
            except FileNotFoundError:
                continue
            pairs.append((uid, self.append(data, msg.flags, date).uid))
        return pairs

    def wait_change(self, modseq: int, uid_count: int, timeout: float) -> bool:
        """Block (worker thread) until the folder changes or ``timeout``; polls the directory
        so changes by other processes are seen too."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if self.modseq != modseq or len(self.sorted_uids) != uid_count:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 1.0))
            with contextlib.suppress(StoreError, OSError):
                self.sync(move_new=False)


_UNIQUE = re.compile(r"^([0-9]+)\.M([0-9]+)P")


def delivery_order(base: str) -> tuple[int, int, str]:
    """Sort key putting Maildir unique names (``<sec>.M<usec>P…``) in delivery order, which a
    plain string sort does not (microseconds are not zero-padded)."""
    found = _UNIQUE.match(base)
    if found is None:
        return (0, 0, base)
    return (int(found.group(1)), int(found.group(2)), base)


def is_missing(exc: OSError) -> bool:
    return exc.errno == errno.ENOENT
