"""The Maildir++ store: unique names, the tmp → new path, quota via maildirsize (the format
Dovecot reads), withdrawal, path safety (symlinks, '..'), and that a failed write leaves nothing
in new/ or cur/. Real files in tmp_path; the ENOSPC case on a real full filesystem is in
tests/integration/test_mailsvc_disk.py."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from mailsvc.maildir import BadMailboxPath, MaildirStore, Quota, StoreError, Usage, parse_relative

NAME = re.compile(r"^[0-9]+\.M[0-9]+P[0-9]+Q[0-9]+R[0-9a-f]{16}\.host,S=([0-9]+),W=\1$")


@pytest.fixture
def store(tmp_path: Path) -> MaildirStore:
    s = MaildirStore(tmp_path / "vmail", hostname="host")
    s.check_root()
    return s


def test_delivery_is_complete_in_new_and_tmp_is_empty(store: MaildirStore) -> None:
    box = store.mailbox("example.org/alice/Maildir/")
    name = box.deliver([b"Subject: x\r\n", b"\r\nbody\r\n"])
    assert NAME.match(name)
    path = box.path / "new" / name
    assert path.read_bytes() == b"Subject: x\r\n\r\nbody\r\n"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert os.listdir(box.path / "tmp") == []
    assert sorted(os.listdir(box.path)) == ["cur", "new", "tmp"]


def test_names_are_unique(store: MaildirStore) -> None:
    box = store.mailbox("d/u")
    names = {box.deliver([b"x"]) for _ in range(200)}
    assert len(names) == 200


def test_hostname_slash_and_colon_are_encoded(tmp_path: Path) -> None:
    s = MaildirStore(tmp_path, hostname="a/b:c")
    assert s.unique().endswith(".a\\057b\\072c")


@pytest.mark.parametrize(
    "path", ["/etc", "../x", "a/../../x", "a/./b", "", "/", "a/b\0c", "a/b c", "a/" * 20]
)
def test_bad_relative_paths(path: str) -> None:
    with pytest.raises(BadMailboxPath):
        parse_relative(path)


def test_symlink_inside_the_root_is_not_followed(store: MaildirStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "example.org").mkdir()
    os.symlink(outside, store.root / "example.org" / "bob")
    with pytest.raises(BadMailboxPath):
        store.mailbox("example.org/bob/Maildir").deliver([b"x"])
    assert list(outside.iterdir()) == []


def test_symlinked_tmp_is_not_followed(store: MaildirStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    box_path = store.root / "d" / "u"
    box_path.mkdir(parents=True)
    os.symlink(outside, box_path / "tmp")
    with pytest.raises(StoreError):
        store.mailbox("d/u").deliver([b"x"])
    assert list(outside.iterdir()) == []


def test_quota_file_is_dovecot_format_and_counts(store: MaildirStore) -> None:
    box = store.mailbox("d/u")
    quota = Quota(bytes=1000)
    box.deliver([b"a" * 100], quota)
    box.deliver([b"b" * 50], quota)
    lines = (box.path / "maildirsize").read_text().splitlines()
    assert lines[0] == "1000S"
    assert box.usage(quota) == Usage(150, 2)
    assert not box.usage(quota).exceeds(quota, 850, 1)
    assert box.usage(quota).exceeds(quota, 851, 1)


def test_quota_recalculated_when_limits_change_or_file_missing(store: MaildirStore) -> None:
    box = store.mailbox("d/u")
    box.deliver([b"a" * 10])  # no quota yet: no maildirsize
    assert not (box.path / "maildirsize").exists()
    quota = Quota(bytes=100, count=5)
    assert box.usage(quota) == Usage(10, 1)
    assert (box.path / "maildirsize").read_text().splitlines()[0] == "100S,5C"
    assert box.usage(Quota(bytes=200)) == Usage(10, 1)  # header changed: recalculated
    (box.path / "maildirsize").write_text("200S\ngarbage\n")
    assert box.usage(Quota(bytes=200)) == Usage(10, 1)


def test_quota_counts_folders_and_cur(store: MaildirStore) -> None:
    box = store.mailbox("d/u")
    box.deliver([b"x" * 7])
    (box.path / "cur" / "1.M1P1.h,S=30:2,S").write_bytes(b"y" * 30)
    (box.path / ".Sent" / "cur").mkdir(parents=True)
    (box.path / ".Sent" / "cur" / "2.M1P1.h:2,S").write_bytes(b"z" * 5)
    assert box.usage(Quota(bytes=10**6)) == Usage(42, 3)


def test_already_full(store: MaildirStore) -> None:
    box = store.mailbox("d/u")
    quota = Quota(bytes=10)
    box.deliver([b"x" * 10], quota)
    assert box.usage(quota).exceeds(quota)


def test_withdraw_removes_and_uncounts(store: MaildirStore) -> None:
    box = store.mailbox("d/u")
    quota = Quota(bytes=1000)
    name = box.deliver([b"x" * 10], quota)
    assert box.withdraw(name, quota)
    assert os.listdir(box.path / "new") == []
    assert box.usage(quota) == Usage(0, 0)
    assert not box.withdraw(name, quota)


def test_unwritable_mailbox_is_a_store_error_and_leaves_nothing(store: MaildirStore) -> None:
    if os.geteuid() == 0:
        # root ignores permissions: make the write fail by a file where tmp/ should be
        box_path = store.root / "d" / "u"
        box_path.mkdir(parents=True)
        (box_path / "tmp").write_bytes(b"")
    else:  # pragma: no cover - CI runs as root
        (store.root / "d").mkdir()
        (store.root / "d").chmod(0o500)
    with pytest.raises(StoreError):
        store.mailbox("d/u").deliver([b"x"])


def test_crash_steps_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="crash step"):
        MaildirStore(tmp_path, crash_at="nowhere")


def test_sweep_tmp(store: MaildirStore) -> None:
    box = store.mailbox("d/u")
    box.deliver([b"x"])
    old = box.path / "tmp" / "stale"
    old.write_bytes(b"partial")
    os.utime(old, (1, 1))
    fresh = box.path / "tmp" / "fresh"
    fresh.write_bytes(b"partial")
    assert box.sweep_tmp() == 1
    assert os.listdir(box.path / "tmp") == ["fresh"]


def test_a_mailbox_removed_behind_our_back_is_created_again(store: MaildirStore) -> None:
    """Deliveries after the first skip the three mkdir of tmp/ new/ cur/; a mailbox removed in
    between is still recreated whole on the next delivery."""
    box = store.mailbox("example.org/bob/Maildir/")
    box.deliver([b"one\r\n"])
    shutil.rmtree(box.path)
    name = store.mailbox("example.org/bob/Maildir/").deliver([b"two\r\n"])
    assert sorted(os.listdir(box.path)) == ["cur", "new", "tmp"]
    assert (box.path / "new" / name).read_bytes() == b"two\r\n"


def test_a_subdirectory_removed_behind_our_back_fails_once_then_is_recreated(
    store: MaildirStore,
) -> None:
    box = store.mailbox("example.org/bob/Maildir/")
    box.deliver([b"one\r\n"])
    for sub in ("tmp", "new"):
        (box.path / sub).rename(box.path / f"{sub}.moved")
        with pytest.raises(StoreError):  # 451: the client retries
            box.deliver([b"two\r\n"])
        delivered = [p.read_bytes() for p in box.path.glob("new*/*")]
        assert b"two\r\n" not in delivered
        name = box.deliver([b"three\r\n"])
        assert (box.path / "new" / name).read_bytes() == b"three\r\n"
        assert os.listdir(box.path / "tmp") == []
