"""The selected-state view of one session (RFC 3501 §5.2, §7.4.1): the message sequence numbers
(a sorted UID list), which UIDs are \\Recent to this session, and what has already been reported,
so untagged EXISTS / RECENT / EXPUNGE / FETCH FLAGS go out between commands — EXPUNGE never during
FETCH, STORE or SEARCH, when sequence numbers must not shift.

With CONDSTORE enabled (RFC 7162) flag updates carry ``UID`` and ``MODSEQ``; with QRESYNC
enabled expunges are reported as ``VANISHED`` UID sets instead of ``EXPUNGE``."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from mailsvc.imap.protocol import compact_set, flag_list
from mailsvc.mailbox.folder import Folder


@dataclass
class Selected:
    folder: Folder
    readonly: bool
    uids: list[int] = field(default_factory=list)
    recent: set[int] = field(default_factory=set)
    modseq: int = 0  # the folder's modification sequence when last reported
    expunge_pending: bool = False
    condstore: bool = False
    qresync: bool = False

    @property
    def exists(self) -> int:
        return len(self.uids)

    def msn(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def msns(self, uids: list[int]) -> list[int | None]:
        """:meth:`msn` of each of ``uids``: the position after the previous hit is tried first,
        so ascending UIDs (every ``1:*``) cost no search each."""
        order, count = self.uids, len(self.uids)
        out: list[int | None] = []
        i = 0
        for uid in uids:
            if i >= count or order[i] != uid:
                i = bisect.bisect_left(order, uid)
            if i < count and order[i] == uid:
                out.append(i + 1)
                i += 1
            else:
                out.append(None)
        return out

    def flags_of(self, uid: int) -> frozenset[str]:
        msg = self.folder.get(uid)
        base = msg.flags if msg is not None else frozenset()
        return base | {"\\Recent"} if uid in self.recent else base

    def updates(self, *, allow_expunge: bool) -> list[bytes]:
        """Untagged responses for what changed in the folder since the last call (the caller
        synced the folder first)."""
        folder = self.folder
        with folder.lock:
            if folder.modseq == self.modseq and not self.expunge_pending:
                return []
            out: list[bytes] = []
            current = folder.messages
            gone = [i for i, uid in enumerate(self.uids) if uid not in current]
            if gone:
                if allow_expunge:
                    if self.qresync:
                        lost = compact_set([self.uids[i] for i in gone])
                        out.append(b"* VANISHED %s\r\n" % lost.encode())
                    for index in reversed(gone):
                        if not self.qresync:
                            out.append(b"* %d EXPUNGE\r\n" % (index + 1))
                        self.recent.discard(self.uids[index])
                        del self.uids[index]
                    self.expunge_pending = False
                else:
                    self.expunge_pending = True
            for index, uid in enumerate(self.uids):
                msg = current.get(uid)
                if msg is not None and msg.modseq > self.modseq:
                    out.append(self.flags_update(index + 1, uid, msg.modseq))
            top = self.uids[-1] if self.uids else 0
            fresh = [u for u in folder.sorted_uids[bisect.bisect_right(folder.sorted_uids, top) :]]
            if fresh:
                if not self.readonly:
                    self.recent |= {u for u in fresh if u >= folder.recent_floor}
                    folder.recent_floor = max(folder.recent_floor, fresh[-1] + 1)
                self.uids.extend(fresh)
                out.append(b"* %d EXISTS\r\n" % len(self.uids))
                out.append(b"* %d RECENT\r\n" % len(self.recent))
            self.modseq = folder.modseq
            return out

    def flags_update(self, msn: int, uid: int, modseq: int) -> bytes:
        """The untagged FETCH for a flag change (with UID and MODSEQ under CONDSTORE)."""
        flags = flag_list(self.flags_of(uid))
        if self.condstore:
            return b"* %d FETCH (UID %d FLAGS %s MODSEQ (%d))\r\n" % (msn, uid, flags, modseq)
        return b"* %d FETCH (FLAGS %s)\r\n" % (msn, flags)
