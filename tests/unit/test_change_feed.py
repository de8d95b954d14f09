"""The change feed's pure parts: which feed a root DSE allows, which naming context a notification
search runs at, what a changed entry means for the caches (table-driven, and never an exception
for any entry: hypothesis), the bounded thread-to-loop handoff, and how a batch of changes maps to
the names dropped from the caches (``CorporateDirectory._on_changes``). The feed against real
servers: tests/integration/test_corporate_feed.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idsvc.config import LdapSettings
from idsvc.directory.ldap.corporate import KNOWN_SUBJECTS, CorporateDirectory
from idsvc.directory.ldap.feed import (
    NOTIFICATION_OID,
    SYNC_OID,
    Batch,
    Change,
    Handoff,
    choose_mode,
    classify,
    naming_context,
)
from idsvc.directory.mapping import Entry
from idsvc.directory.profiles import profile_for

AD = profile_for("ad")
BOOK = profile_for("postfix-book")
INET = profile_for("inetorgperson")
GUID = uuid.UUID("0123456789abcdef0123456789abcdef").bytes_le


@pytest.mark.parametrize(
    ("supported", "mode"),
    [
        ([SYNC_OID.encode(), b"1.2.3"], "syncrepl"),
        ([NOTIFICATION_OID.encode()], "notification"),
        ([NOTIFICATION_OID, SYNC_OID], "syncrepl"),  # both: the standard one
        ([b"1.2.840.113556.1.4.319"], None),  # paged results only
        ([], None),
        ([b"\xff\xfe"], None),  # not ASCII: no crash, no feed
    ],
)
def test_choose_mode(supported: list[Any], mode: str | None) -> None:
    assert choose_mode(supported) == mode


@pytest.mark.parametrize(
    ("base", "contexts", "expected"),
    [
        ("DC=corp,DC=test", [b"DC=corp,DC=test"], "DC=corp,DC=test"),
        ("OU=People,DC=corp,DC=test", [b"CN=Configuration,DC=corp,DC=test", b"DC=corp,DC=test"],
         "DC=corp,DC=test"),
        ("ou=people, dc=Corp,dc=test", [b"DC=corp,DC=test"], "DC=corp,DC=test"),
        ("OU=x,DC=other,DC=test", [b"DC=corp,DC=test"], "OU=x,DC=other,DC=test"),
        ("DC=corp,DC=test", [], "DC=corp,DC=test"),
        ("DC=xcorp,DC=test", [b"DC=corp,DC=test"], "DC=xcorp,DC=test"),  # not a suffix by RDN
        ("CN=a,DC=sub,DC=corp,DC=test", [b"DC=corp,DC=test", b"DC=sub,DC=corp,DC=test"],
         "DC=sub,DC=corp,DC=test"),  # the closest one
    ],
)  # fmt: skip
def test_naming_context(base: str, contexts: list[bytes], expected: str) -> None:
    assert naming_context(base, contexts) == expected


CLASSIFY: list[tuple[str, Any, dict[str, list[bytes]], dict[str, Any], Change]] = [
    (
        "AD user: SMTP/smtp proxy addresses, mail and UPN; SIP ignored",
        AD,
        {
            "objectClass": [b"top", b"person", b"user"],
            "objectGUID": [GUID],
            "proxyAddresses": [b"SMTP:Alice@Corp.test", b"smtp:a.l@corp.test", b"SIP:x@corp.test"],
            "mail": [b"alice@corp.test"],
            "userPrincipalName": [b"alice@ad.corp.test"],
        },
        {},
        Change(GUID.hex(), ("alice@corp.test", "a.l@corp.test", "alice@ad.corp.test")),
    ),
    (
        "AD deleted object: no addresses, same objectGUID",
        AD,
        {"objectClass": [b"user"], "objectGUID": [GUID], "isDeleted": [b"TRUE"]},
        {},
        Change(GUID.hex(), (), deleted=True),
    ),
    (
        "AD group",
        AD,
        {"objectClass": [b"top", b"group"], "objectGUID": [GUID]},
        {},
        Change(GUID.hex(), (), group=True),
    ),
    (
        "AD computer: no address",
        AD,
        {"objectClass": [b"computer", b"user"], "objectGUID": [GUID]},
        {},
        Change(GUID.hex(), ()),
    ),
    (
        "postfix-book: mail and mailAlias, syncrepl's entryUUID wins",
        BOOK,
        {"mail": [b"bob@people.test"], "mailAlias": [b"Sales@People.Test", b"not an address"]},
        {"stable_id": "ABC-1"},
        Change("abc-1", ("bob@people.test", "sales@people.test")),
    ),
    (
        "inetOrgPerson: every mail value (a second one finds the entry too)",
        INET,
        {"mail": [b"erin@people.test", b"e2@people.test"], "entryUUID": [b"U-1"]},
        {},
        Change("u-1", ("erin@people.test", "e2@people.test")),
    ),
    (
        "syncrepl delete: the id only",
        INET,
        {},
        {"stable_id": "u-2", "deleted": True},
        Change("u-2", (), deleted=True),
    ),
    (
        "undecodable values are no addresses; no stable id",
        INET,
        {"mail": [b"\xff\xfe@x"], "objectClass": [b"\xff"]},
        {},
        Change("", ()),
    ),
    (
        "two objectGUIDs: no stable id rather than a guess",
        AD,
        {"objectGUID": [GUID, GUID], "mail": [b"x@corp.test"]},
        {},
        Change("", ("x@corp.test",)),
    ),
]


@pytest.mark.parametrize(
    ("profile", "attrs", "kwargs", "expected"),
    [case[1:] for case in CLASSIFY],
    ids=[case[0] for case in CLASSIFY],
)
def test_classify(
    profile: Any, attrs: dict[str, list[bytes]], kwargs: dict[str, Any], expected: Change
) -> None:
    assert classify(profile, "cn=x,dc=test", attrs, **kwargs) == expected


@given(
    st.dictionaries(
        st.sampled_from(["mail", "proxyAddresses", "objectGUID", "objectClass", "isDeleted",
                         "mailAlias", "userPrincipalName", "entryUUID"]),
        st.lists(st.binary(max_size=40), max_size=4),
    ),
    st.sampled_from([AD, BOOK, INET]),
)  # fmt: skip
def test_classify_never_raises(attrs: dict[str, list[bytes]], profile: Any) -> None:
    change = classify(profile, "cn=x", attrs)
    assert all("@" in a for a in change.addresses)


async def test_handoff_is_bounded_and_an_overflow_becomes_one_flush() -> None:
    got: list[Batch] = []
    done = asyncio.Event()

    def deliver(batch: Batch) -> None:
        got.append(batch)
        done.set()

    handoff = Handoff(asyncio.get_running_loop(), deliver, limit=3)
    changes = [Change(f"id{i}") for i in range(3)]

    def feed(items: list[Change | None]) -> None:
        for item in items:
            handoff.put(item)

    # put from this thread: the loop cannot drain in between, so the batches are exact
    feed(list(changes))
    await asyncio.wait_for(done.wait(), 5)
    assert got == [changes]  # in order, one batch
    done.clear()
    feed([Change(f"more{i}") for i in range(10)])  # past the limit
    await asyncio.wait_for(done.wait(), 5)
    assert got[1] == [None]  # one flush instead of the lost changes
    done.clear()
    # from another thread, as the feed does: everything arrives, in order
    many = [Change(f"t{i}") for i in range(3)]
    await asyncio.to_thread(feed, many)
    while sum(len(b) for b in got[2:]) < 3:
        await asyncio.wait_for(done.wait(), 5)
        done.clear()
    assert [c for b in got[2:] for c in b] == many


def test_handoff_after_the_loop_closed_is_silent() -> None:
    loop = asyncio.new_event_loop()
    handoff = Handoff(loop, lambda batch: None, limit=3)
    loop.close()
    handoff.put(None)  # the feed thread may outlive the loop by one message


class Recorder:
    """An ``Invalidator`` that records what it was asked to drop."""

    def __init__(self) -> None:
        self.dropped: list[str | None] = []

    def invalidate(self, user: str | None = None) -> None:
        self.dropped.append(user)

    def invalidate_domain(self, domain: str) -> None:
        self.dropped.append("@" + domain)


@pytest.fixture
async def corp() -> AsyncIterator[CorporateDirectory]:
    settings = LdapSettings(
        uris=("ldap://127.0.0.1:9",), base_dn="dc=people,dc=test", profile="postfix-book",
        mail_domains=("people.test",),
    )  # fmt: skip
    directory = CorporateDirectory(settings)  # never connected: only the mapping is used
    try:
        yield directory
    finally:
        await directory.close()


def read(corp: CorporateDirectory, uid: str, *addresses: str) -> None:
    """As ``find_account`` does when it reads an entry."""
    entry = Entry(
        f"uid={uid},dc=people,dc=test",
        {"entryUUID": [uid.encode()], "mail": [addresses[0].encode()],
         "mailAlias": [a.encode() for a in addresses[1:]]},
    )  # fmt: skip
    corp._known(corp.profile.account(entry, with_hash=False), entry)


async def test_changes_drop_old_and_new_addresses(corp: CorporateDirectory) -> None:
    rec = Recorder()
    corp._feed_target = rec
    read(corp, "u-1", "bob@people.test", "old@people.test")
    # the alias "old" was removed and "new" added: both names are dropped
    corp._on_changes([Change("u-1", ("bob@people.test", "new@people.test"))])
    assert sorted(rec.dropped, key=str) == ["bob@people.test", "new@people.test", "old@people.test"]
    rec.dropped.clear()
    # an account never read: only what it carries now (a cached "no such address" of it)
    corp._on_changes([Change("u-9", ("fresh@people.test",))])
    assert rec.dropped == ["fresh@people.test"]
    rec.dropped.clear()
    read(corp, "u-2", "carol@people.test")
    corp._on_changes([Change("u-2", deleted=True), Change("u-3", deleted=True)])
    assert rec.dropped == ["carol@people.test"]  # u-3 was never read: nothing to drop
    rec.dropped.clear()
    corp._on_changes([Change("g-1", group=True)])  # no group gating: groups do not matter
    assert rec.dropped == []


@pytest.mark.parametrize(
    "batch",
    [
        [Change("u-1", ("a@people.test",)), None],  # a (re)connect
        [Change("", ("a@people.test",))],  # no stable id
    ],
)
async def test_unmappable_changes_flush_everything(corp: CorporateDirectory, batch: Batch) -> None:
    rec = Recorder()
    corp._feed_target = rec
    corp._on_changes(batch)
    assert rec.dropped == [None]


async def test_after_evictions_an_unknown_id_without_addresses_flushes(
    corp: CorporateDirectory,
) -> None:
    rec = Recorder()
    corp._feed_target = rec
    for i in range(KNOWN_SUBJECTS + 1):
        corp._subjects[f"id{i}"] = (f"u{i}@people.test",)
    read(corp, "last", "last@people.test")  # evicts the oldest
    assert corp._subjects_evicted
    corp._on_changes([Change("unknown", ("x@people.test",))])
    assert rec.dropped == ["x@people.test"]
    corp._on_changes([Change("unknown", deleted=True)])
    assert rec.dropped[-1] is None  # may have been a cached account: flush
    assert not corp._subjects
    assert not corp._subjects_evicted


async def test_group_change_with_group_gating_flushes() -> None:
    settings = LdapSettings(
        uris=("ldap://127.0.0.1:9",), base_dn="dc=people,dc=test", profile="postfix-book",
        mail_domains=("people.test",), required_group="cn=mail,dc=people,dc=test",
    )  # fmt: skip
    corp = CorporateDirectory(settings)
    try:
        rec = Recorder()
        corp._feed_target = rec
        corp._on_changes([Change("g-1", group=True)])
        assert rec.dropped == [None]
    finally:
        await corp.close()


async def test_feed_off_starts_nothing() -> None:
    settings = LdapSettings(
        uris=("ldap://127.0.0.1:9",), base_dn="dc=people,dc=test", profile="postfix-book",
        mail_domains=("people.test",), change_feed="off",
    )  # fmt: skip
    corp = CorporateDirectory(settings)
    try:
        assert corp.start_change_feed(Recorder()) is None
    finally:
        await corp.close()
