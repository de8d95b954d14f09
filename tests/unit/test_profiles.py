"""Read-only attribute profiles (idsvc/directory/profiles.py) and the filter templates they use:
entry → account conversions for every built-in profile, AD's proxyAddresses / userAccountControl
/ accountExpires rules, overrides from configuration, and escaping of every substituted value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idsvc.config import LdapSettings
from idsvc.directory import filters
from idsvc.directory.mapping import Entry
from idsvc.directory.profiles import AD, IREDMAIL, POSTFIX_BOOK, PROFILES, profile_for
from idsvc.errors import ConfigError, TemporaryFailure
from idsvc.model import ALL_SERVICES, Address, Service

NOW = datetime(2026, 12, 6, tzinfo=UTC)


def entry(**attrs: list[str] | list[bytes]) -> Entry:
    return Entry(
        "cn=x,dc=corp,dc=test",
        {k: [v if isinstance(v, bytes) else v.encode() for v in vs] for k, vs in attrs.items()},
    )


def test_ad_primary_is_the_upper_case_smtp_proxy_address() -> None:
    e = entry(
        proxyAddresses=["smtp:Old@Corp.Test", "X500:/o=x", "SIP:alice@corp.test",
                        "SMTP:Alice@corp.test", "smtp:alice@corp.test", "smtp:not an address"],
        mail=["other@corp.test"],
    )  # fmt: skip
    primary, aliases = AD.addresses(e)
    assert str(primary) == "alice@corp.test"
    assert [str(a) for a in aliases] == ["old@corp.test"]  # primary not repeated, junk dropped


def test_ad_falls_back_to_mail_without_an_smtp_primary() -> None:
    primary, aliases = AD.addresses(
        entry(proxyAddresses=["smtp:b@corp.test"], mail=["a@corp.test"])
    )
    assert (str(primary), [str(a) for a in aliases]) == ("a@corp.test", ["b@corp.test"])
    with pytest.raises(TemporaryFailure, match="no primary address"):
        AD.addresses(entry(proxyAddresses=["SIP:x@corp.test"]))


@pytest.mark.parametrize(
    ("uac", "expires", "enabled"),
    [
        ("512", "9223372036854775807", True),
        ("514", "0", False),  # ACCOUNTDISABLE
        ("66048", "0", True),  # DONT_EXPIRE_PASSWORD | NORMAL_ACCOUNT
        ("512", "116444736000000000", False),  # expired on 1970-01-01
        ("512", "160000000000000000", True),  # expires in 2108
    ],
)
def test_ad_enabled_state(uac: str, expires: str, enabled: bool) -> None:
    e = entry(mail=["a@corp.test"], userAccountControl=[uac], accountExpires=[expires])
    assert AD.account(e, with_hash=False, now=NOW).enabled is enabled


def test_ad_never_reads_a_hash_and_keeps_objectguid_as_hex() -> None:
    e = entry(mail=["a@corp.test"], userPassword=["{PLAIN}x"], objectGUID=[b"\x01\x02\xff"])
    assert AD.account(e, with_hash=True).password_hash is None
    assert AD.entry_id(e) == "0102ff"


def test_corrupt_typed_attributes_are_temporary_failures() -> None:
    with pytest.raises(TemporaryFailure, match="userAccountControl"):
        AD.account(entry(mail=["a@corp.test"], userAccountControl=["x"]), with_hash=False)
    with pytest.raises(TemporaryFailure, match="mailQuota"):
        POSTFIX_BOOK.account(entry(mail=["a@corp.test"], mailQuota=["lots"]), with_hash=False)


def test_postfix_book_quota_is_kib_and_mail_enabled_boolean() -> None:
    e = entry(mail=["a@x.test"], mailQuota=["1024"], mailEnabled=["FALSE"],
              mailAlias=["b@x.test"], userPassword=["{SSHA}abc"])  # fmt: skip
    account = POSTFIX_BOOK.account(e, with_hash=True)
    assert account.quota == 1024 * 1024
    assert not account.enabled
    assert account.password_hash == "{SSHA}abc"
    assert [str(a) for a in POSTFIX_BOOK.addresses(e)[1]] == ["b@x.test"]


@pytest.mark.parametrize(
    ("services", "expected"),
    [
        (["mail", "smtp", "imap"], {Service.SMTP, Service.SUBMISSION, Service.IMAP}),
        (["mail", "pop3"], {Service.POP3}),
        (["smtp", "imap", "pop3"], set()),  # without "mail" nothing
    ],
)
def test_iredmail_enabled_services(services: list[str], expected: set[Service]) -> None:
    e = entry(mail=["a@x.test"], accountStatus=["active"], enabledService=services)
    assert IREDMAIL.account(e, with_hash=False).services == frozenset(expected)


def test_iredmail_status_must_be_active() -> None:
    assert not IREDMAIL.account(entry(mail=["a@x.test"]), with_hash=False).enabled
    disabled = entry(mail=["a@x.test"], accountStatus=["disabled"])
    assert not IREDMAIL.account(disabled, with_hash=False).enabled


def test_profiles_without_service_attributes_allow_every_service() -> None:
    assert PROFILES["inetorgperson"].account(
        entry(mail=["a@x.test"]), with_hash=False
    ).services == (ALL_SERVICES)


def test_login_filter_escapes_every_value_and_gates_on_the_group() -> None:
    address = Address.parse("a.b@corp.test")
    filt = AD.login_filter(address, "CN=mail (all),DC=corp,DC=test")
    assert "(userPrincipalName=a.b@corp.test)" in filt
    assert "(memberOf:1.2.840.113556.1.4.1941:=CN=mail \\28all\\29,DC=corp,DC=test)" in filt
    inet = PROFILES["inetorgperson"].login_filter(address, None)
    assert inet == "(&(objectClass=inetOrgPerson)(|(mail=a.b@corp.test)(uid=a.b)))"


@given(st.text(min_size=1, max_size=40))
def test_template_values_cannot_change_the_filter_structure(value: str) -> None:
    filt = filters.template("(&(objectClass=user)(mail=%u)(uid=%n))", {"u": value, "n": value})
    escaped = filters.escape_value(value)
    assert filt == f"(&(objectClass=user)(mail={escaped})(uid={escaped}))"
    for char in "()*\\\x00":
        assert char not in escaped.replace("\\28", "").replace("\\29", "").replace(
            "\\2a", ""
        ).replace("\\5c", "").replace("\\00", "")


@pytest.mark.parametrize(
    "bad",
    ["mail=%u", "(mail=%u", "(mail=%u))", "(mail=%x)", "(&(mail=%u)(uid=%z))"],
)
def test_bad_templates_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        filters.check_template(bad)


def test_overrides_apply_and_are_checked() -> None:
    profile = profile_for("ad", {"quota": "extensionAttribute10", "quota_unit": 1048576})
    assert (profile.quota, profile.quota_unit) == ("extensionAttribute10", 1048576)
    with pytest.raises(ConfigError, match="unknown profile setting"):
        profile_for("ad", {"no_such_field": "x"})
    with pytest.raises(ConfigError, match="attribute name"):
        profile_for("ad", {"quota": "bad attribute"})
    with pytest.raises(ConfigError, match="unbalanced"):
        profile_for("ad", {"user_filter": "(&(mail=%u)"})
    with pytest.raises(ConfigError, match="unknown directory profile"):
        profile_for("exchange")


def test_settings_rules_for_read_only_profiles() -> None:
    with pytest.raises(ValueError, match="needs mail_domains"):
        LdapSettings(profile="ad")
    with pytest.raises(ValueError, match="read-only"):
        LdapSettings(
            profile="ad", mail_domains=("corp.test",), writer_dn="cn=w", writer_password="pw"
        )
    with pytest.raises(ValueError, match="read-only profiles only"):
        LdapSettings(mapping={"quota": "x"})


def test_config_check_prints_the_effective_mapping(tmp_path: Path) -> None:
    config = tmp_path / "idsvc.toml"
    config.write_text(
        '[directory]\nbackend = "ldap"\n[directory.ldap]\nprofile = "ad"\n'
        'base_dn = "DC=corp,DC=test"\nmail_domains = ["corp.test"]\n'
        '[directory.ldap.mapping]\nquota = "extensionAttribute10"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDSVC_")}
    env["IDSVC_CONFIG"] = str(config)
    run = [sys.executable, "-c", "from idsvc.cli import main; raise SystemExit(main())"]
    out = subprocess.run(
        [*run, "--json", "config", "check"], env=env, capture_output=True, text=True, check=True
    )
    mapping = json.loads(out.stdout)["effective_mapping"]
    assert mapping["name"] == "ad"
    assert mapping["quota"] == "extensionAttribute10"
    assert mapping["primary"] == "proxyAddresses"
    text = subprocess.run(
        [*run, "config", "check"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "# effective mapping of the read-only profile 'ad':" in text
    config.write_text(config.read_text().replace("extensionAttribute10", "not valid"))
    bad = subprocess.run([*run, "config", "check"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2
    assert "attribute name" in bad.stderr
