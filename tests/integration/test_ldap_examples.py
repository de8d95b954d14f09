"""The shipped LDAP artefacts work: idsvc.schema loads in slapd.conf syntax, example-dit.ldif
loads and reads back through LdapDirectory, and bench.ldapdata produces usable users."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.ldapdata import load_users
from idsvc.directory.base import BindResult
from idsvc.directory.ldap import LdapDirectory
from idsvc.model import Address
from tests.fixtures.slapd import REPO, SCHEMA_DIR, SlapdServer, find_binary, require_slapd

pytestmark = pytest.mark.slapd


@pytest.fixture
def example_server() -> Iterator[SlapdServer]:
    require_slapd()
    server = SlapdServer(suffix="dc=example,dc=org", tls=False)
    try:
        server.build()
        yield server
    finally:
        server.cleanup()


def test_schema_file_loads_in_slapd_conf_syntax(tmp_path: Path) -> None:
    require_slapd()
    slaptest = find_binary("slaptest")
    assert slaptest is not None
    includes = "".join(
        f"include {SCHEMA_DIR / name}.schema\n" for name in ("core", "cosine", "inetorgperson")
    )
    conf = tmp_path / "slapd.conf"
    conf.write_text(
        f"{includes}include {REPO / 'schemas' / 'idsvc.schema'}\n"
        f"modulepath /usr/lib/ldap\nmoduleload back_mdb\n"
        f"database mdb\nsuffix dc=example,dc=org\ndirectory {tmp_path}\n"
        "index objectClass eq\n"
        "index idsvcAddress,idsvcAliasSource,idsvcDomainName,idsvcAliasDomain eq,sub\n"
        "index idsvcDestination eq\n"
    )
    proc = subprocess.run(
        [slaptest, "-u", "-f", str(conf)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr


async def test_example_dit_reads_back(example_server: SlapdServer, tmp_path: Path) -> None:
    text = (REPO / "schemas" / "example-dit.ldif").read_text()
    # the fixture already created the suffix entry: load everything below it
    entries = [e for e in text.split("\n\n") if "dn: " in e and "dn: dc=example,dc=org\n" not in e]
    ldif = tmp_path / "below-base.ldif"
    ldif.write_text("\n\n".join(entries) + "\n")
    example_server.slapadd(ldif)
    example_server.start()
    directory = await LdapDirectory.open(example_server.settings("dc=example,dc=org"))
    try:
        domain = await directory.find_domain("example.net")
        assert domain is not None
        assert (domain.name, domain.alias_domains, domain.default_quota) == (
            "example.org",
            ("example.net",),
            1073741824,
        )
        alice = await directory.find_account(Address.parse("Alice@Example.org"))
        assert alice is not None
        assert alice.display_name == "Alice Example"
        assert {s.value for s in alice.services} == {"smtp", "submission", "imap"}
        assert alice.created.isoformat() == "2026-01-01T12:00:00+00:00"
        assert await directory.bind_check(alice, "s3cret") is BindResult.OK
        info = await directory.find_alias("info@example.org")
        assert info is not None
        assert info.destinations == ("alice@example.org", "helpdesk@remote.example")
        catchall = await directory.find_alias("@example.org")
        assert catchall is not None
        assert catchall.enabled is False
        assert (await directory.list_aliases("example.org")).total == 2
    finally:
        await directory.close()


async def test_bench_data_loads_and_authenticates() -> None:
    require_slapd()
    server = SlapdServer(tls=False)
    try:
        data = await asyncio.to_thread(load_users, server, 300, domains=7)
        assert data.entries == 2 + 7 + 300
        assert set(data.timings) == {"ldif", "slapadd", "start", "total"}
        directory = await LdapDirectory.open(data.settings())
        try:
            for i in (0, 1, 150, 299):
                account = await directory.find_account(Address.parse(data.address(i)))
                assert account is not None
                assert account.address.domain == f"d{i % 7}.example"
                assert await directory.bind_check(account, data.password) is BindResult.OK
            assert await directory.find_account(Address.parse("user300@d6.example")) is None
            assert (await directory.list_accounts("d3.example")).total == len(range(3, 300, 7))
            assert (await directory.list_domains()).total == 7
        finally:
            await directory.close()
    finally:
        server.cleanup()
