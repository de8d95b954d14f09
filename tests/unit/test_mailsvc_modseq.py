"""Persistent modification sequences (RFC 7162) in ``mailsvc-modseq``: the pure file format
(table of good and torn/malformed records, hypothesis round trip), and one folder's modseqs as
several processes see them (independent :class:`Folder` objects on the same Maildir): they
survive a restart, agree between processes, never repeat under concurrent changes, follow flag
changes made by a plain Maildir client (a rename), remember expunges up to a bound and raise the
floor beyond it. Real files under tmp_path."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailsvc.mailbox import modseq as ms
from mailsvc.mailbox import uidlist
from mailsvc.mailbox.account import Account, FolderRegistry
from mailsvc.mailbox.folder import Folder
from mailsvc.maildir import MaildirStore, Quota

MSG = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture
def acct(tmp_path: Path) -> Account:
    store = MaildirStore(tmp_path / "vmail", hostname="host", fsync=False)
    store.check_root()
    account = Account(store, FolderRegistry(fsync=False), "example.org/a/Maildir", Quota())
    account.prepare()
    return account


def process(acct: Account) -> Folder:
    """The INBOX as another process (or a restarted one) sees it: a fresh index."""
    folder = Folder(acct.root, acct.root, "INBOX", fsync=False)
    folder.sync()
    return folder


# --- the file format ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "header"),
    [
        ("1 V12 H5 E0", ms.Header(12, 5, 0)),
        ("1 V12 H5", ms.Header(12, 5, 0)),
        ("1 H5 V7 E3 Zfuture", ms.Header(7, 5, 3)),
        ("2 V12 H5 E0", None),
        ("1 V12", None),
        ("1 Vx H5", None),
        ("1 V1 H-1", None),
        ("1 V1 H99999999999999999999", None),
        ("", None),
    ],
)
def test_header(line: str, header: ms.Header | None) -> None:
    assert ms.parse_header(line) == header


@pytest.mark.parametrize(
    ("text", "records"),
    [
        ("1 2 :S\n", [ms.Record(1, 2, "S")]),
        ("1 2 :\n3 4 X\n", [ms.Record(1, 2, ""), ms.Record(3, 4, None)]),
        ("1 2 :Sab\n1 3 :", [ms.Record(1, 2, "Sab"), ms.Record(1, 3, "")]),
        ("0 2 :S\n", []),  # UID 0
        ("1 0 :S\n", []),  # modseq 0
        ("4294967296 2 :S\n", []),  # UID beyond 32 bits
        ("1 2 S\n", []),  # letters without ':'
        ("1 2 :S1\n", []),  # not a letter
        ("1 2 :S extra\n", []),
        ("x 2 :S\n", []),
        ("1 2 Y\n", []),
        ("1 2\n", []),
        ("1 99999999999999999999 :S\n", []),
    ],
)
def test_records(text: str, records: list[ms.Record]) -> None:
    assert ms.parse_records(text) == records


@given(
    st.lists(
        st.builds(
            ms.Record,
            st.integers(1, 2**32 - 1),
            st.integers(1, ms.MAX_MODSEQ),
            st.one_of(st.none(), st.text("DFRSTabcdefghijklmnopqrstuvwxyz", max_size=8)),
        ),
        max_size=30,
    ),
    st.integers(1, 2**32 - 1),
    st.integers(0, ms.MAX_MODSEQ),
)
def test_file_round_trip(records: list[ms.Record], validity: int, highest: int) -> None:
    text = ms.format_file(ms.Header(validity, highest, 0), records)
    first, _, rest = text.partition("\n")
    assert ms.parse_header(first) == ms.Header(validity, highest, 0)
    assert ms.parse_records(rest) == records


@given(st.text(max_size=300))
def test_garbage_never_raises(text: str) -> None:
    for rec in ms.parse_records(text):
        assert 0 < rec.uid < 2**32
        assert 0 < rec.modseq <= ms.MAX_MODSEQ


# --- a folder's modseqs ---------------------------------------------------------------------


def test_modseqs_survive_a_restart(acct: Account) -> None:
    for _ in range(3):
        acct.root.deliver([MSG])
    inbox = process(acct)
    start = inbox.modseq
    assert {m.modseq for m in inbox.messages.values()} == {start}
    inbox.set_flags(2, frozenset({"\\Seen"}))
    assert inbox.get(2).modseq == start + 1  # type: ignore[union-attr]
    assert inbox.expunge([3]) == [3]
    assert inbox.modseq == start + 2
    again = process(acct)  # a restarted server
    assert again.modseq == start + 2
    assert {u: m.modseq for u, m in again.messages.items()} == {1: start, 2: start + 1}
    assert again.vanished == {3: start + 2}
    text = (acct.root.path / ms.MODSEQ_FILE).read_text()
    assert text.startswith(f"1 V{inbox.uidvalidity} H")


def test_processes_agree_on_each_others_changes(acct: Account) -> None:
    for _ in range(2):
        acct.root.deliver([MSG])
    a, b = process(acct), process(acct)
    assert a.modseq == b.modseq
    a.set_flags(1, frozenset({"\\Flagged"}))
    b.sync(force=True)  # b sees the rename, and adopts the modseq a recorded for it
    assert b.get(1).flags == {"\\Flagged"}  # type: ignore[union-attr]
    assert b.get(1).modseq == a.get(1).modseq  # type: ignore[union-attr]
    b.set_flags(2, frozenset({"\\Seen"}))  # b's next modseq is past a's
    assert b.get(2).modseq == a.get(1).modseq + 1  # type: ignore[union-attr]
    b.expunge([1])
    a.sync(force=True)
    assert a.modseq == b.modseq
    assert a.vanished == b.vanished == {1: b.modseq}


def test_a_plain_maildir_client_rename_gets_a_new_modseq(acct: Account) -> None:
    acct.root.deliver([MSG])
    inbox = process(acct)
    before = inbox.modseq
    (name,) = os.listdir(acct.root.path / "cur")
    base = name.split(":")[0]
    os.rename(acct.root.path / "cur" / name, acct.root.path / "cur" / f"{base}:2,FS")
    inbox.sync(force=True)
    msg = inbox.get(1)
    assert msg is not None
    assert msg.flags == {"\\Flagged", "\\Seen"}
    assert msg.modseq == inbox.modseq == before + 1
    assert process(acct).get(1).modseq == before + 1  # type: ignore[union-attr]


def test_unchanged_since_refuses_newer_messages(acct: Account) -> None:
    for _ in range(3):
        acct.root.deliver([MSG])
    inbox = process(acct)
    base = inbox.modseq
    inbox.set_flags(2, frozenset({"\\Seen"}))
    done = inbox.store_flags([1, 2, 3], "+FLAGS", frozenset({"\\Answered"}), base)
    assert done.refused == [2]
    assert done.changed == [1, 3]
    assert done.modseq == base + 2
    again = inbox.store_flags([1], "+FLAGS", frozenset({"\\Answered"}), base + 5)
    assert again.changed == []  # no change: no new modseq
    assert again.modseq == 0
    assert inbox.modseq == base + 2


def test_concurrent_processes_never_repeat_a_modseq(acct: Account) -> None:
    for _ in range(20):
        acct.root.deliver([MSG])
    folders = [process(acct) for _ in range(3)]
    seen: list[list[int]] = [[] for _ in folders]

    def work(index: int) -> None:
        folder = folders[index]
        for round_ in range(15):
            uid = 1 + (index * 7 + round_) % 20
            flag = "\\Seen" if round_ % 2 else "\\Flagged"
            result = folder.store_flags([uid], "+FLAGS" if index % 2 else "-FLAGS",
                                        frozenset({flag}))  # fmt: skip
            if result.modseq:
                seen[index].append(result.modseq)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stamps = [m for s in seen for m in s]
    assert len(stamps) == len(set(stamps))  # every change got its own modseq
    for folder in folders:
        folder.sync(force=True)
    views = [{u: (m.letters, m.modseq) for u, m in f.messages.items()} for f in folders]
    assert (
        views[0]
        == views[1]
        == views[2]
        == {u: (m.letters, m.modseq) for u, m in process(acct).messages.items()}
    )


def test_expunges_are_remembered_up_to_a_bound(
    acct: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ms, "MAX_VANISHED", 8)
    for _ in range(12):
        acct.root.deliver([MSG])
    inbox = process(acct)
    for uid in range(1, 12):
        inbox.expunge([uid])
    assert len(inbox.vanished) <= 8
    assert inbox.vanished_floor > 0
    assert min(inbox.vanished.values()) > inbox.vanished_floor
    again = process(acct)
    assert again.vanished == inbox.vanished
    assert again.vanished_floor == inbox.vanished_floor


def test_file_is_compacted(acct: Account) -> None:
    acct.root.deliver([MSG])
    inbox = process(acct)
    for i in range(1200):
        inbox.set_flags(1, frozenset({"\\Seen"} if i % 2 else set()))
    lines = (acct.root.path / ms.MODSEQ_FILE).read_text().splitlines()
    assert len(lines) < 1100
    assert process(acct).get(1).modseq == inbox.modseq  # type: ignore[union-attr]


def test_recreated_folder_forgets_old_expunges(acct: Account) -> None:
    acct.root.deliver([MSG])
    inbox = process(acct)
    inbox.expunge([1])
    os.unlink(acct.root.path / "dovecot-uidlist")
    acct.root.deliver([MSG])
    inbox.sync(force=True)
    assert inbox.vanished == {}
    assert inbox.state().uids == [1]


def test_unreadable_file_is_rebuilt(acct: Account) -> None:
    acct.root.deliver([MSG])
    inbox = process(acct)
    inbox.set_flags(1, frozenset({"\\Seen"}))
    (acct.root.path / ms.MODSEQ_FILE).write_text("garbage\n")
    again = process(acct)
    # what clients were told is lost: the new values are above anything handed out before, and
    # every expunge before them is answered conservatively
    assert again.get(1).modseq > inbox.modseq  # type: ignore[union-attr]
    assert again.vanished_floor >= again.modseq - 1
    assert ms.parse_header((acct.root.path / ms.MODSEQ_FILE).read_text().split("\n")[0])


def test_expunge_while_no_process_watched_is_remembered(acct: Account) -> None:
    for _ in range(3):
        acct.root.deliver([MSG])
    before = process(acct)
    victim = before.get(2)
    assert victim is not None
    os.unlink(acct.root.path / victim.relpath)  # a plain Maildir client, mailsvc not running
    after = process(acct)
    assert after.state().uids == [1, 3]
    assert after.vanished == {2: before.modseq + 1}
    assert after.modseq == before.modseq + 1
    assert process(acct).vanished == {2: before.modseq + 1}  # recorded once, read back


def test_flag_changes_do_not_reparse_the_uid_list(
    acct: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(5):
        acct.root.deliver([MSG])
    inbox = process(acct)
    reads: list[int] = []
    original = uidlist.read
    monkeypatch.setattr(uidlist, "read", lambda box: reads.append(1) or original(box))
    for uid in range(1, 6):
        inbox.set_flags(uid, frozenset({"\\Seen"}))
    inbox.expunge([5])
    assert reads == []  # the file did not change: the parsed list is reused
    acct.root.deliver([MSG])
    inbox.sync(force=True)  # assigns UID 6 itself, appends, and keeps what it wrote
    assert reads == []
    acct.root.deliver([MSG])
    other = process(acct)  # parses the list at its first load, assigns UID 7, appends
    assert len(reads) == 1
    inbox.sync(force=True)
    assert len(reads) == 2  # the list another process appended to is parsed again
    assert inbox.state().uids == other.state().uids == [1, 2, 3, 4, 6, 7]
