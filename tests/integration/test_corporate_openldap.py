"""Corporate OpenLDAP directories read through the ``inetorgperson``, ``postfix-book`` and
``iredmail`` profiles: a real slapd each (the last two with their schemas loaded), sample entries
as those ecosystems write them, lookups and aliases through the profile, and authentication both
ways (hash read by the service account, and bind-through) through the real auth core.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from idsvc.auth.engine import Authenticator
from idsvc.auth.request import AuthRequest, Outcome
from idsvc.directory.ldap.corporate import CorporateDirectory
from idsvc.errors import ReadOnlyDirectory
from idsvc.model import Account, Address, Secret, Service
from tests.fixtures import authstack
from tests.fixtures.slapd import SlapdServer, require_slapd
from tests.integration import saslauthd_support as sas

SCHEMAS = Path(__file__).resolve().parents[1] / "fixtures" / "schemas"
DOMAIN = "people.test"


def ssha(password: str) -> str:
    salt = os.urandom(4)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def person(uid: str, password: str, *classes: str, **attrs: list[str]) -> dict[str, list[str]]:
    return {
        "objectClass": ["inetOrgPerson", *classes],
        "uid": [uid],
        "cn": [uid.capitalize()],
        "sn": [uid],
        "displayName": [f"{uid.capitalize()} Example"],
        "userPassword": [ssha(password)],
        **attrs,
    }


def load(server: SlapdServer, base: str, people: dict[str, dict[str, list[str]]]) -> None:
    server.add(f"ou=people,{base}", {"objectClass": ["organizationalUnit"], "ou": ["people"]})
    for uid, attrs in people.items():
        server.add(f"uid={uid},ou=people,{base}", attrs)


@pytest.fixture(scope="module")
def postfix_book() -> Iterator[tuple[SlapdServer, str]]:
    require_slapd()
    with SlapdServer(tls=False, extra_schemas=(SCHEMAS / "postfix-book.ldif",)) as server:
        server.start()
        base = server.new_subtree("postfix-book")
        load(server, base, {
            "alice": person("alice", "pb-Alice-pw", "PostfixBookMailAccount",
                            mail=[f"alice@{DOMAIN}"], mailAlias=[f"sales@{DOMAIN}"],
                            mailQuota=["2048"], mailEnabled=["TRUE"],
                            mailHomeDirectory=["/srv/vmail/people.test/alice"]),
            "bob": person("bob", "pb-Bob-pw", "PostfixBookMailAccount",
                          mail=[f"bob@{DOMAIN}"], mailEnabled=["FALSE"]),
        })  # fmt: skip
        yield server, base


@pytest.fixture(scope="module")
def iredmail() -> Iterator[tuple[SlapdServer, str]]:
    require_slapd()
    with SlapdServer(tls=False, extra_schemas=(SCHEMAS / "iredmail.ldif",)) as server:
        server.start()
        base = server.new_subtree("iredmail")
        services = ["mail", "smtp", "smtpsecured", "imap", "imapsecured"]  # no pop3
        load(server, base, {
            "carol": person("carol", "ir-Carol-pw", "mailUser", mail=[f"carol@{DOMAIN}"],
                            accountStatus=["active"], enabledService=[*services, "shadowaddress"],
                            shadowAddress=[f"c.c@{DOMAIN}"], mailQuota=["1048576"]),
            "dan": person("dan", "ir-Dan-pw", "mailUser", mail=[f"dan@{DOMAIN}"],
                          accountStatus=["disabled"], enabledService=services),
        })  # fmt: skip
        yield server, base


@pytest.fixture
def inetorgperson(slapd: SlapdServer) -> tuple[SlapdServer, str]:
    base = slapd.new_subtree(f"inet-{os.urandom(3).hex()}")
    load(slapd, base, {
        "erin": person("erin", "io-Erin-pw", mail=[f"erin@{DOMAIN}"]),
    })  # fmt: skip
    return slapd, base


async def open_corp(
    server: SlapdServer, base: str, profile: str, **overrides: Any
) -> CorporateDirectory:
    settings = server.settings(
        base, profile=profile, mail_domains=(DOMAIN,), writer_dn="", writer_password=None,
        **overrides,
    )  # fmt: skip
    return await CorporateDirectory.open(settings)


@pytest.fixture
async def auth_over() -> AsyncIterator[Any]:
    made: list[tuple[Authenticator, CorporateDirectory]] = []

    async def build(directory: CorporateDirectory) -> Authenticator:
        auth = authstack.authenticator(directory, sas.hasher())
        made.append((auth, directory))
        return auth

    yield build
    for auth, directory in made:
        await auth.close()
        await directory.close()


def request(login: str, password: str, service: str = "imap") -> AuthRequest:
    return AuthRequest(login=login, password=Secret(password), service=service,
                       remote_ip="127.0.0.1", secured=True, protocol="test")  # fmt: skip


@pytest.mark.parametrize("method", ["search", "bind"])
async def test_postfix_book(
    postfix_book: tuple[SlapdServer, str], auth_over: Any, method: str
) -> None:
    corp = await open_corp(*postfix_book, "postfix-book", auth_method=method)
    auth = await auth_over(corp)
    alice = await corp.find_account(Address.parse(f"alice@{DOMAIN}"))
    assert alice is not None
    assert alice.quota == 2048 * 1024  # KiB in the directory
    assert alice.enabled
    assert (alice.password_hash is not None) is (method == "search")
    alias = await corp.find_alias(f"sales@{DOMAIN}")
    assert alias is not None
    assert alias.destinations == (f"alice@{DOMAIN}",)
    assert (await auth.authenticate(request(f"alice@{DOMAIN}", "pb-Alice-pw"))).ok
    wrong = await auth.authenticate(request(f"alice@{DOMAIN}", "nope"))
    assert wrong.outcome is Outcome.MISMATCH
    bob = await auth.authenticate(request(f"bob@{DOMAIN}", "pb-Bob-pw"))
    assert bob.outcome is Outcome.DISABLED  # mailEnabled FALSE, right password
    with pytest.raises(ReadOnlyDirectory, match="postfix-book"):
        await corp.add_account(Account(address=Address.parse(f"x@{DOMAIN}"), password_hash=None))


async def test_iredmail(iredmail: tuple[SlapdServer, str], auth_over: Any) -> None:
    corp = await open_corp(*iredmail, "iredmail")
    auth = await auth_over(corp)
    carol = await corp.find_account(Address.parse(f"carol@{DOMAIN}"))
    assert carol is not None
    assert carol.quota == 1048576  # bytes in iRedMail
    assert carol.services == frozenset({Service.SMTP, Service.SUBMISSION, Service.IMAP})
    alias = await corp.find_alias(f"c.c@{DOMAIN}")
    assert alias is not None
    assert alias.destinations == (f"carol@{DOMAIN}",)
    assert (await auth.authenticate(request(f"carol@{DOMAIN}", "ir-Carol-pw"))).ok
    pop = await auth.authenticate(request(f"carol@{DOMAIN}", "ir-Carol-pw", service="pop3"))
    assert pop.outcome is Outcome.DISABLED  # pop3 not in enabledService
    dan = await auth.authenticate(request(f"dan@{DOMAIN}", "ir-Dan-pw"))
    assert dan.outcome is Outcome.DISABLED  # accountStatus disabled


async def test_inetorgperson_login_by_uid_or_mail(
    inetorgperson: tuple[SlapdServer, str], auth_over: Any
) -> None:
    corp = await open_corp(*inetorgperson, "inetorgperson", auth_method="bind")
    auth = await auth_over(corp)
    by_mail = await auth.authenticate(request(f"erin@{DOMAIN}", "io-Erin-pw"))
    assert by_mail.ok
    assert by_mail.user == f"erin@{DOMAIN}"
    page = await corp.list_accounts(DOMAIN)
    assert [str(a.address) for a in page.items] == [f"erin@{DOMAIN}"]
    assert page.items[0].display_name == "Erin Example"
    # a login filter override from configuration: uid only
    uid_only = await open_corp(
        *inetorgperson, "inetorgperson", auth_method="bind",
        mapping={"user_filter": "(&(objectClass=inetOrgPerson)(uid=%n))"},
    )  # fmt: skip
    auth2 = await auth_over(uid_only)
    assert (await auth2.authenticate(request(f"erin@{DOMAIN}", "io-Erin-pw"))).ok
    assert not (await auth2.authenticate(request(f"erin@{DOMAIN}", "io-erin-PW"))).ok
