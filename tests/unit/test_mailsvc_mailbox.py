"""The shared mailbox layer: folder names (modified UTF-7, confinement), dovecot-uidlist, flags
and keywords in the ':2,' info, raw-byte MIME offsets, and one folder's index — UIDs persistent
across processes (here: across independent Folder objects), safe under concurrent delivery and
concurrent sessions, cheap when nothing changed. Real files under tmp_path."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailsvc.mailbox import flags as fl
from mailsvc.mailbox import mime, names, uidlist
from mailsvc.mailbox.account import Account, FolderExists, FolderRegistry, NoSuchFolder
from mailsvc.mailbox.folder import Folder
from mailsvc.maildir import MaildirStore, Quota

MSG = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture
def store(tmp_path: Path) -> MaildirStore:
    s = MaildirStore(tmp_path / "vmail", hostname="host", fsync=False)
    s.check_root()
    return s


def account(store: MaildirStore, registry: FolderRegistry | None = None) -> Account:
    acct = Account(store, registry or FolderRegistry(fsync=False), "example.org/a/Maildir", Quota())
    acct.prepare()
    return acct


# --- names -----------------------------------------------------------------------------------


@given(st.text(min_size=1, max_size=40))
def test_mutf7_round_trip(text: str) -> None:
    encoded = names.mutf7_encode(text)
    assert encoded.isascii()
    assert names.mutf7_decode(encoded) == text


@pytest.mark.parametrize(
    ("text", "decoded"),
    [("&-", "&"), ("Entw&APw-rfe", "Entwürfe"), ("&ZeVnLIqe-", "日本語"), ("a&-b", "a&b")],
)
def test_mutf7_known(text: str, decoded: str) -> None:
    assert names.mutf7_decode(text) == decoded
    assert names.mutf7_encode(decoded) == text


@pytest.mark.parametrize(
    "bad",
    ["..", "a..b", ".a", "a.", "a/b", "/etc", "a\\b", "x\x00", "x\ty", "&AGE-", "&Jjo", "&&-",
     "é", "." * 20, ".".join(["a"] * 17), "a" * 300],
)  # fmt: skip
def test_folder_names_refused(bad: str) -> None:
    with pytest.raises(names.BadFolderName):
        names.directory(bad)


def test_folder_directories() -> None:
    assert names.directory("inbox") == ""
    assert names.directory("Sent") == ".Sent"
    assert names.directory("Lists.dev") == ".Lists.dev"
    assert names.directory("Entw&APw-rfe") == ".Entw&APw-rfe"
    assert names.normalise("Inbox.x") == "INBOX.x"
    assert names.from_directory(".Sent") == "Sent"
    assert names.from_directory("..deleted") is None
    assert names.from_directory("cur") is None


# --- uidlist and flags ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3 V12 N5 Gab\n1 :a\n4 W12 :b\n", (12, 5, {"a": 1, "b": 4})),
        ("3 V12 N2\n7 :a\n", (12, 8, {"a": 7})),
        ("3 V12 N2\n7 :a\n8 :b", (12, 9, {"a": 7, "b": 8})),
        ("3 V12 N2\nx :a\n9\n:c\n0 :z\n", (12, 2, {})),
        ("1 12 3\n", None),
        ("3 N2\n", None),
        ("3 V0 N2\n", None),
        ("", None),
    ],
)
def test_uidlist_parse(text: str, expected: tuple[int, int, dict[str, int]] | None) -> None:
    parsed = uidlist.parse(text)
    if expected is None:
        assert parsed is None
    else:
        assert parsed is not None
        assert (parsed.uidvalidity, parsed.next_uid, parsed.records) == expected


def test_flags_round_trip() -> None:
    keywords: list[str] = []
    letters, grew = fl.encode(frozenset({"\\Seen", "\\Deleted", "$Junk", "\\Recent"}), keywords)
    assert (letters, grew, keywords) == ("STa", True, ["$Junk"])
    assert fl.decode(letters, keywords) == {"\\Seen", "\\Deleted", "$Junk"}
    assert fl.split_name("123.host,S=5:2,FS") == ("123.host,S=5", "FS")
    assert fl.split_name("123.host") == ("123.host", "")
    with pytest.raises(fl.TooManyKeywords):
        fl.encode(frozenset(f"k{i}" for i in range(27)), [])


# --- MIME on raw bytes ------------------------------------------------------------------

MULTI = (
    b"Content-Type: multipart/mixed; boundary=XX\r\n\r\npreamble\r\n--XX\r\n"
    b"Content-Type: text/plain\r\n\r\nfirst\r\n--XX\r\n\r\nsecond\n\r\n--XX\r\n"
    b"Content-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\ninner body\r\n--XX--\r\nepilogue\r\n"
)


def test_mime_offsets_are_raw() -> None:
    root = mime.parse(MULTI)
    assert root.is_multipart
    assert len(root.children) == 3
    first, second, third = root.children
    assert first.body_bytes(MULTI) == b"first"
    assert first.header_bytes(MULTI) == b"Content-Type: text/plain\r\n\r\n"
    assert second.body_bytes(MULTI) == b"second\n"
    assert (second.maintype, second.subtype) == ("text", "plain")
    assert third.message is not None
    assert third.message.body_bytes(MULTI) == b"inner body"
    assert mime.section(root, (3, 1)) is third.message
    assert mime.section(root, (4,)) is None
    single = mime.parse(MSG)
    assert single.body_bytes(MSG) == b"body\r\n"
    assert single.body_lines(MSG) == 1


@given(st.binary(max_size=2000))
def test_mime_never_fails_and_stays_in_bounds(raw: bytes) -> None:
    root = mime.parse(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + raw)
    stack = [root]
    while stack:
        part = stack.pop()
        assert 0 <= part.start <= part.body_start <= part.end
        stack.extend(part.children)
        if part.message:
            stack.append(part.message)


# --- folders ------------------------------------------------------------------------------


def test_uids_persist_and_dovecot_format(store: MaildirStore) -> None:
    acct = account(store)
    inbox = acct.folder("INBOX")
    names_ = [acct.root.deliver([MSG]) for _ in range(3)]
    assert inbox.sync()
    state = inbox.state()
    assert state.uids == [1, 2, 3]
    assert state.next_uid == 4
    text = (acct.root.path / "dovecot-uidlist").read_text()
    assert text.startswith(f"3 V{state.uidvalidity} N4")
    assert [line.split(" :")[1] for line in text.splitlines()[1:]] == sorted(names_)
    assert sorted(os.listdir(acct.root.path / "new")) == []  # moved to cur/
    # another process (a fresh index) sees the same UIDs
    again = Folder(acct.root, acct.root, "INBOX", fsync=False)
    again.sync()
    assert again.state().uids == [1, 2, 3]
    assert again.state().uidvalidity == state.uidvalidity


def test_unchanged_folder_is_not_rescanned(store: MaildirStore) -> None:
    acct = account(store)
    inbox = acct.folder("INBOX")
    acct.root.deliver([MSG])
    inbox.sync()
    inbox._scan.at_ns += 10**10  # pretend the last scan was long after the last change
    calls: list[str] = []
    original = inbox._rescan
    inbox._rescan = lambda box, move: calls.append("scan") or original(box, move)  # type: ignore[method-assign]
    assert inbox.sync() is False
    assert calls == []


def test_flags_keywords_and_expunge(store: MaildirStore) -> None:
    acct = account(store)
    inbox = acct.folder("INBOX")
    acct.root.deliver([MSG])
    inbox.sync()
    assert inbox.set_flags(1, frozenset({"\\Seen", "$Label1"}))
    (name,) = os.listdir(acct.root.path / "cur")
    assert name.endswith(":2,Sa")
    assert (acct.root.path / "dovecot-keywords").read_text() == "0 $Label1\n"
    fresh = Folder(acct.root, acct.root, "INBOX", fsync=False)
    fresh.sync()
    assert fresh.get(1) is not None
    assert fresh.get(1).flags == {"\\Seen", "$Label1"}  # type: ignore[union-attr]
    assert inbox.read(1) == MSG
    assert inbox.expunge([1]) == [1]
    assert os.listdir(acct.root.path / "cur") == []
    fresh.sync()
    assert fresh.state().uids == []


def test_append_keeps_bytes_date_and_size(store: MaildirStore) -> None:
    acct = account(store)
    sent = acct.folder("Sent")
    raw = b"Subject: lf only\n\nbody\n"
    got = sent.append(raw, frozenset({"\\Seen"}), internaldate=1_000_000_000.0)
    assert got.uid == 1
    assert sent.read(1) == raw
    assert sent.size(1) == len(raw)
    assert sent.vsize(1) == len(raw) + 3
    assert sent.internaldate(1) == 1_000_000_000.0


def test_concurrent_delivery_and_sessions_never_share_a_uid(store: MaildirStore) -> None:
    acct = account(store)
    folders = [Folder(acct.root, acct.root, "INBOX", fsync=False) for _ in range(3)]
    stop = threading.Event()

    def deliver() -> None:
        for _ in range(60):
            acct.root.deliver([MSG])
        stop.set()

    def session(folder: Folder) -> None:
        while not stop.is_set():
            folder.sync(force=True)
        folder.sync(force=True)

    threads = [threading.Thread(target=deliver)] + [
        threading.Thread(target=session, args=(f,)) for f in folders
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    views = [{m.base: m.uid for m in f.messages.values()} for f in folders]
    assert all(len(v) == 60 for v in views)
    assert views[0] == views[1] == views[2]
    assert sorted(views[0].values()) == list(range(1, 61))


def test_special_use_folders_and_subscriptions(store: MaildirStore) -> None:
    acct = account(store)
    listed = {f.name: f.attributes for f in acct.folders()}
    assert listed["Sent"] == ("\\HasNoChildren", "\\Sent")
    assert set(listed) == {"INBOX", "Sent", "Drafts", "Trash", "Junk"}
    assert set(acct.subscriptions()) == {"Sent", "Drafts", "Trash", "Junk"}
    acct.delete("Junk")
    acct.prepare()  # a second login does not bring it back
    assert "Junk" not in {f.name for f in acct.folders()}


def test_create_rename_delete(store: MaildirStore) -> None:
    acct = account(store)
    acct.create("A")
    acct.create("A.B")
    with pytest.raises(FolderExists):
        acct.create("A")
    assert {f.name: f.attributes[0] for f in acct.folders()}["A"] == "\\HasChildren"
    acct.folder("A.B").append(MSG)
    acct.rename("A", "C")
    moved = acct.folder("C.B")
    moved.sync()
    assert moved.read(1) == MSG
    with pytest.raises(NoSuchFolder):
        acct.folder("A")
    acct.delete("C.B")
    assert not acct.exists("C.B")


def test_symlinked_folder_is_not_followed(store: MaildirStore, tmp_path: Path) -> None:
    acct = account(store)
    outside = tmp_path / "outside"
    for sub in ("cur", "new", "tmp"):
        (outside / sub).mkdir(parents=True)
    (outside / "cur" / "secret:2,").write_bytes(b"secret")
    os.symlink(outside, acct.root.path / ".Evil")
    with pytest.raises(NoSuchFolder):
        acct.folder("Evil")
    os.symlink(outside / "cur", acct.root.path / ".Sent" / "cur2")
    sent = acct.folder("Sent")
    sent.sync()
    assert sent.state().uids == []
