"""MailLookups on both backends: hosted domains, mailboxes, alias expansion (catch-all, alias
domains, recipient delimiter, nesting, loops), sender logins, quota, userdb/passdb, paging,
caching with invalidation, and a directory outage as TemporaryFailure."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from idsvc.config import PasswordSettings
from idsvc.directory.base import Directory
from idsvc.errors import TemporaryFailure
from idsvc.lookups import ExpansionLimit, MailLookups
from idsvc.model import Alias
from idsvc.passwords import PasswordHasher
from idsvc.provisioning import Provisioner
from tests.fixtures.outage import eventually
from tests.fixtures.slapd import SlapdServer
from tests.integration.mail_support import (
    ALICE,
    ALICE_QUOTA,
    BOB,
    CAROL,
    DAVE,
    HASH,
    PLUS,
    lookups,
    populate,
)

BAD_KEYS = [
    "",
    "a@b@example.org",
    '"a b"@example.org',
    "alice@example.org\r\n",
    "x\x00@example.org",
]


@pytest.fixture
async def mail(directory: Directory) -> MailLookups:
    await populate(directory)
    return lookups(directory)


@pytest.mark.parametrize(
    ("name", "hosted"),
    [
        ("example.org", True),
        ("EXAMPLE.ORG", True),
        ("example.net", True),  # alias domain
        ("other.example", True),
        ("off.example", False),  # disabled
        ("nope.test", False),
        ("", False),
        ("a b", False),
        ("example.org\n", False),
    ],
)
async def test_hosted_domains(mail: MailLookups, name: str, hosted: bool) -> None:
    assert await mail.is_hosted_domain(name) is hosted


@pytest.mark.parametrize(
    ("address", "path"),
    [
        (ALICE, "example.org/alice/Maildir/"),
        ("Alice@Example.ORG", "example.org/alice/Maildir/"),
        ("alice+news@example.org", "example.org/alice/Maildir/"),
        ("alice@example.net", "example.org/alice/Maildir/"),
        ("alice+x@example.net", "example.org/alice/Maildir/"),
        (PLUS, "example.org/a+b/Maildir/"),  # the exact local part wins over stripping
        ("a+c@example.org", None),  # "a" is nobody
        (CAROL, None),  # disabled
        ("team@example.org", None),  # an alias, not a mailbox
        ("eve@off.example", None),  # disabled domain
        ("nobody@example.org", None),
        *((key, None) for key in BAD_KEYS),
    ],
)
async def test_mailbox_paths(mail: MailLookups, address: str, path: str | None) -> None:
    assert await mail.mailbox_path(address) == path


@pytest.mark.parametrize(
    ("address", "expansion"),
    [
        ("team@example.org", (ALICE, BOB)),
        ("TEAM+x@example.org", (ALICE, BOB)),  # delimiter stripped, case folded
        ("all@example.org", (ALICE, BOB, DAVE, "ext@external.test")),  # nested, external kept
        ("loop1@example.org", ("loop1@example.org", ALICE)),  # the loop stops at itself
        ("team@example.net", (ALICE, BOB)),  # alias domain → the target's alias
        ("bob@example.net", (BOB,)),  # alias domain → the target's account
        ("postmaster@example.net", (ALICE,)),  # via the target domain's alias
        ("nobody@example.net", ()),
        ("anything@other.example", (DAVE,)),  # catch-all
        ("any+thing@other.example", (DAVE,)),
        (DAVE, ()),  # a mailbox is never captured by the catch-all
        (ALICE, ()),
        ("sales@example.org", (CAROL,)),  # expansion does not judge the destination
        ("old@example.org", ()),  # disabled alias
        ("x@external.test", ()),  # not ours
        ("x@off.example", ()),
        *((key, ()) for key in BAD_KEYS),
    ],
)
async def test_alias_expansion(mail: MailLookups, address: str, expansion: tuple[str, ...]) -> None:
    got = await mail.expand_alias(address)
    assert sorted(got) == sorted(expansion)  # the store keeps destinations in its own order
    assert len(set(got)) == len(got)


async def test_alias_expansion_is_bounded(directory: Directory) -> None:
    await populate(directory)
    small = lookups(directory, max_alias_results=3)
    with pytest.raises(ExpansionLimit):
        await small.expand_alias("all@example.org")
    shallow = lookups(directory, max_alias_depth=1)
    # beyond the depth the nested alias is handed back as it is (Postfix expands it further)
    assert set(await shallow.expand_alias("all@example.org")) == {
        "team@example.org",
        DAVE,
        "ext@external.test",
    }


@pytest.mark.parametrize(
    ("address", "owners"),
    [
        (ALICE, (ALICE,)),
        ("alice+x@example.org", (ALICE,)),
        ("alice@example.net", (ALICE,)),
        ("team@example.org", (ALICE, BOB)),
        ("all@example.org", (ALICE, BOB, DAVE)),
        ("postmaster@example.net", (ALICE,)),
        ("sales@example.org", ()),  # its only destination is disabled
        (CAROL, ()),
        ("anything@other.example", ()),  # a catch-all grants nobody a sender address
        ("nobody@example.org", ()),
        ("x@external.test", ()),
        *((key, ()) for key in BAD_KEYS),
    ],
)
async def test_sender_logins(mail: MailLookups, address: str, owners: tuple[str, ...]) -> None:
    assert sorted(await mail.sender_logins(address)) == sorted(owners)


async def test_quota_userdb_passdb(mail: MailLookups) -> None:
    assert await mail.quota(ALICE) == ALICE_QUOTA
    assert await mail.quota(BOB) == 0
    assert await mail.quota("nobody@example.org") is None
    user = await mail.userdb("Alice+x@example.net")
    assert user is not None
    assert user.fields() == {
        "user": ALICE,
        "home": "/srv/vmail/example.org/alice",
        "mail": "maildir:~/Maildir",
        "uid": "5000",
        "gid": "5000",
        "quota_rule": f"*:bytes={ALICE_QUOTA}",
    }
    bob = await mail.userdb(BOB)
    assert bob is not None
    assert "quota_rule" not in bob.fields()
    assert await mail.userdb("nobody@example.org") is None
    record = await mail.passdb(ALICE)
    assert record is not None
    assert (record.password, record.nologin) == (HASH, None)
    assert HASH not in repr(record)
    carol = await mail.passdb(CAROL)
    assert carol is not None
    assert carol.nologin == "account disabled"
    imap, pop3 = await mail.passdb(DAVE, "imap"), await mail.passdb(DAVE, "pop3")
    assert imap is not None
    assert pop3 is not None
    assert (imap.nologin, pop3.nologin) == (None, "service not enabled")
    assert await mail.passdb("nobody@example.org") is None


async def test_list_users_pages_in_key_order(mail: MailLookups) -> None:
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await mail.list_users(cursor, limit=2)
        assert len(page.items) <= 2
        seen.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == sorted(seen)
    assert set(seen) == {ALICE, BOB, CAROL, DAVE, PLUS, "eve@off.example"}


async def test_cache_keeps_answers_until_invalidated(directory: Directory) -> None:
    await populate(directory)
    mail = lookups(directory, cache_ttl=300)
    assert await mail.expand_alias("new@example.org") == ()
    await directory.add_alias(Alias("new@example.org", (BOB,)))
    assert await mail.expand_alias("new@example.org") == ()  # cached "none"
    mail.invalidate("new@example.org")
    assert await mail.expand_alias("new@example.org") == (BOB,)


async def test_provisioning_drops_cached_lookups(directory: Directory) -> None:
    await populate(directory)
    mail = lookups(directory, cache_ttl=300)
    hasher = PasswordHasher(PasswordSettings(scheme="SHA512-CRYPT", sha_crypt_rounds=1000))
    prov = Provisioner(directory, hasher, audit=_NullAudit(), invalidator=mail)
    assert await mail.expand_alias("new@example.org") == ()
    await prov.create_alias("new@example.org", [BOB], actor="test")
    assert await mail.expand_alias("new@example.org") == (BOB,)
    assert await mail.expand_alias("x@example.org") == ()
    await prov.create_alias("@example.org", [ALICE], actor="test")  # catch-all: whole domain
    assert await mail.expand_alias("x@example.org") == (ALICE,)
    await prov.update_alias("new@example.org", destinations=[ALICE], actor="test")
    assert await mail.expand_alias("new@example.org") == (ALICE,)
    await prov.delete_alias("new@example.org", actor="test")
    assert await mail.expand_alias("new@example.org") == (ALICE,)  # now the catch-all's
    assert await mail.mailbox_path(BOB) is not None
    await prov.set_enabled(BOB, False, actor="test")
    assert await mail.mailbox_path(BOB) is None
    prov.close()


class _NullAudit:
    enabled = False

    def emit(self, event: Any) -> None:
        pass


@pytest.mark.slapd
async def test_directory_outage_is_a_temporary_failure(own_slapd: SlapdServer) -> None:
    from idsvc.directory.ldap import LdapDirectory

    base = own_slapd.new_subtree("mail")
    directory = await LdapDirectory.open(own_slapd.settings(base, timeout=1.0, retry_after=0.1))
    try:
        await populate(directory)
        mail = lookups(directory, cache_ttl=0, timeout=3.0)
        assert await mail.mailbox_path(ALICE) is not None
        own_slapd.pause()
        try:
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: mail.mailbox_path(ALICE),
                lambda: mail.expand_alias("team@example.org"),
                lambda: mail.is_hosted_domain("example.org"),
                lambda: mail.sender_logins(ALICE),
                lambda: mail.passdb(ALICE),
            ]
            for call in calls:
                with pytest.raises(TemporaryFailure):
                    await call()
        finally:
            own_slapd.resume()
        # back without restarting anything of ours
        assert await eventually(lambda: mail.mailbox_path(ALICE)) == "example.org/alice/Maildir/"
    finally:
        await directory.close()
