"""One mail dataset (domains, alias domains, accounts, aliases, catch-all) in a real directory,
shared by the mail-lookup, socketmap, tcp_table, policy and Dovecot dict tests, and the
``MailLookups`` built on it. Nothing here fakes the directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from idsvc.config import MailSettings
from idsvc.lookups import MailLookups
from idsvc.model import Account, Address, Alias, Domain, Service
from tests.fixtures.slapd import ssha

PASSWORD = "s3cret-Mail"
HASH = ssha(PASSWORD, b"salt")
VMAIL = Path("/srv/vmail")

ALICE = "alice@example.org"
BOB = "bob@example.org"
CAROL = "carol@example.org"  # disabled
DAVE = "dave@other.example"  # IMAP only
PLUS = "a+b@example.org"  # a local part that holds the delimiter
ALICE_QUOTA = 1_000_000


def mail_settings(**overrides: Any) -> MailSettings:
    values: dict[str, Any] = {"vmail_root": VMAIL, "vmail_uid": 5000, "vmail_gid": 5000}
    values.update(overrides)
    return MailSettings(**values)


async def populate(directory: Any) -> None:
    await directory.add_domain(Domain(name="example.org", alias_domains=("example.net",)))
    await directory.add_domain(Domain(name="other.example"))
    await directory.add_domain(Domain(name="off.example", enabled=False))
    accounts = [
        Account(Address.parse(ALICE), HASH, quota=ALICE_QUOTA),
        Account(Address.parse(BOB), HASH),
        Account(Address.parse(CAROL), HASH, enabled=False),
        Account(Address.parse(DAVE), HASH, services=frozenset({Service.IMAP})),
        Account(Address.parse(PLUS), HASH),
        Account(Address.parse("eve@off.example"), HASH),
    ]
    for account in accounts:
        await directory.add_account(account)
    aliases = [
        Alias("team@example.org", (ALICE, BOB)),
        Alias("all@example.org", ("team@example.org", DAVE, "ext@external.test")),
        Alias("loop1@example.org", ("loop2@example.org",)),
        Alias("loop2@example.org", ("loop1@example.org", ALICE)),
        Alias("sales@example.org", (CAROL,)),
        Alias("old@example.org", (BOB,), enabled=False),
        Alias("postmaster@example.org", (ALICE,)),
        Alias("@other.example", (DAVE,)),
    ]
    for alias in aliases:
        await directory.add_alias(alias)


def lookups(directory: Any, **overrides: Any) -> MailLookups:
    return MailLookups(directory, mail_settings(**overrides))
