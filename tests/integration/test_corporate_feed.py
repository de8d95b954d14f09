"""The change feed against real directories, through a running ``idsvc serve`` whose caches keep
everything for an hour: a change made directly in the directory by someone else (``ldapmodify``,
``samba-tool``) shows on the saslauthd socket (``testsaslauthd``) and the Postfix socketmap
(``postmap -q``) within ``LATENCY`` seconds.

* OpenLDAP with the syncprov overlay (RFC 4533 refreshAndPersist), the postfix-book profile, two
  workers (each follows the directory itself, and each is asked): a password change, an alias
  added, the account disabled; then slapd killed: the feed reconnects, and a change made while
  it was down (offline, with ``slapmodify``) shows because every cache is flushed after the
  reconnect; the feed goes on following changes afterwards.
* Samba AD (LDAP_SERVER_NOTIFICATION_OID), the ad profile: an ``smtp:`` proxy address added and
  the account disabled over LDAP (within ``LATENCY``); the account disabled and the password set
  with ``samba-tool`` (it writes the database directly, so Samba notices it only at its periodic
  re-check, every 5 s).
* A directory that offers no feed (slapd without syncprov) says so once and serves from the TTLs.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.samba_ad import BASE_DN, AdDirectory
from tests.fixtures.slapd import SlapdServer, require_slapd, ssha
from tests.integration.lookup_support import postmap_config, require_postmap
from tests.integration.test_cli import Cli, base_config
from tests.integration.test_cli_serve import (
    Served,
    each_worker,
    run_testsaslauthd,
    serving,
    sockdir,
)
from tests.integration.test_serve_maps import postmap_q

__all__ = ["serving", "sockdir"]  # fixtures

SCHEMAS = Path(__file__).resolve().parents[1] / "fixtures" / "schemas"
DOMAIN = "people.test"
LATENCY = 2.0  # seconds from a change in the directory to every surface showing it
HOUR = 3600
SAMBA_RECHECK = 5.0  # Samba re-runs notification searches this often for changes made offline
SAMBA_BOUND = SAMBA_RECHECK + 3.0  # that, plus room for a loaded machine


def until(check: Callable[[], bool], timeout: float = LATENCY, since: float | None = None) -> float:
    """Seconds from ``since`` (default: now) until ``check()`` holds (polled every 20 ms);
    fails after ``timeout``."""
    start = time.monotonic() if since is None else since
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout} s: {check.__doc__ or check}")
        time.sleep(0.02)


def feed_cli(workdir: Path, sockdir: Path, ldap_table: dict[str, Any], workers: int) -> Cli:
    """``idsvc serve`` on a read-only directory: saslauthd and socketmap sockets, hour-long
    caches (auth decisions, negative ones too, and mail lookups)."""
    config = base_config(workdir)
    config["directory"] = {"backend": "ldap"}
    config["directory.ldap"] = ldap_table
    config["auth"].update(cache_ttl=HOUR, cache_negative_ttl=HOUR)
    config["mail"] = {"vmail_root": "/srv/vmail", "cache_ttl": HOUR}
    config["saslauthd.socket"] = {"path": str(sockdir / "mux")}
    config["dovecot_auth.socket"] = {"enabled": False, "path": str(sockdir / "auth")}
    config["control.socket"] = {"path": str(sockdir / "control")}
    config["socketmap.socket"] = {"enabled": True, "path": str(sockdir / "sm"), "mode": 0o666}
    config["serve"] = {"workers": workers}
    return Cli(workdir, config, "ldap")


def secret_file(workdir: Path, value: str) -> str:
    path = workdir / "reader.pw"
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(0o600)
    return str(path)


def ok(sock: Path, user: str, password: str) -> bool:
    return run_testsaslauthd(sock, user, password).startswith("0: OK")


def refused(sock: Path, user: str, password: str) -> bool:
    return run_testsaslauthd(sock, user, password).startswith("0: NO")


def ldapmodify(server: SlapdServer, ldif: str) -> None:
    subprocess.run(
        ["/usr/bin/ldapmodify", "-x", "-H", server.uri, "-D", server.root_dn, "-w", server.root_pw],
        input=ldif, text=True, capture_output=True, timeout=30, check=True,
    )  # fmt: skip


def started(served: Served, workers: int, feed: str) -> None:
    """Wait until serve is ready and every process's feed is live (in either order)."""
    live = f"change feed: {feed} live on "
    while served.log.count(live) < workers or "ready: " not in served.log:
        served.wait_for(rf"{live}|ready: \d+ listener")


# -- OpenLDAP: RFC 4533 syncrepl ----------------------------------------------------------------


@pytest.fixture
def book() -> Iterator[tuple[SlapdServer, str]]:
    require_slapd()
    require_postmap()
    schemas = (SCHEMAS / "postfix-book.ldif",)
    with SlapdServer(tls=False, syncprov=True, extra_schemas=schemas) as server:
        base = server.new_subtree("feed")
        server.add(f"ou=people,{base}", {"objectClass": ["organizationalUnit"], "ou": ["people"]})
        server.add(
            f"uid=alice,ou=people,{base}",
            {"objectClass": ["inetOrgPerson", "PostfixBookMailAccount"], "uid": ["alice"],
             "cn": ["Alice"], "sn": ["A"], "mail": [f"alice@{DOMAIN}"], "mailEnabled": ["TRUE"],
             "userPassword": [ssha("Old-pw-1")]},
        )  # fmt: skip
        yield server, base


def test_openldap_changes_reach_every_worker_and_survive_a_restart(
    book: tuple[SlapdServer, str], tmp_path: Path, sockdir: Path, serving: list[Served]
) -> None:
    server, base = book
    alice_dn = f"uid=alice,ou=people,{base}"
    table = {
        "uris": [server.uri], "base_dn": base, "bind_dn": server.reader_dn,
        "bind_password_file": secret_file(tmp_path, server.reader_pw),
        "profile": "postfix-book", "mail_domains": [DOMAIN], "auth_method": "bind",
        "connect_timeout": 2.0, "timeout": 5.0, "retry_after": 0.5,
    }  # fmt: skip
    served = Served(feed_cli(tmp_path, sockdir, table, workers=2))
    serving.append(served)
    started(served, 2, "syncrepl")
    mux, alice = sockdir / "mux", f"alice@{DOMAIN}"
    table_sm = f"socketmap:unix:{sockdir / 'sm'}"
    with postmap_config() as pm:

        def alias() -> str:
            return postmap_q(pm, f"sales@{DOMAIN}", f"{table_sm}:alias")

        def mailbox() -> str:
            return postmap_q(pm, alice, f"{table_sm}:mailbox")

        # every worker caches: alice's password, her mailbox, "no such alias"
        for only in each_worker(served):
            with only:
                assert ok(mux, alice, "Old-pw-1")
                assert mailbox() == f"{DOMAIN}/alice/Maildir/"
                assert alias() == ""

        # a new password, set in the directory: the cached "OK" for the old one goes
        t0 = time.monotonic()
        ldapmodify(server, f"dn: {alice_dn}\nchangetype: modify\nreplace: userPassword\n"
                           f"userPassword: {ssha('New-pw-2')}\n")  # fmt: skip
        for only in each_worker(served):
            with only:
                took = until(lambda: refused(mux, alice, "Old-pw-1"), since=t0)
                print(f"openldap password change -> old password refused: {took:.3f} s")
                assert ok(mux, alice, "New-pw-2")

        # an alias added: the cached "no such alias" goes
        t0 = time.monotonic()
        ldapmodify(server, f"dn: {alice_dn}\nchangetype: modify\nadd: mailAlias\n"
                           f"mailAlias: sales@{DOMAIN}\n")  # fmt: skip
        for only in each_worker(served):
            with only:
                took = until(lambda: alias() == alice, since=t0)
                print(f"openldap alias added -> socketmap answers it: {took:.3f} s")

        # disabled: refused with the right password, and no mailbox any more
        t0 = time.monotonic()
        ldapmodify(server, f"dn: {alice_dn}\nchangetype: modify\nreplace: mailEnabled\n"
                           "mailEnabled: FALSE\n")  # fmt: skip
        for only in each_worker(served):
            with only:
                took = until(lambda: refused(mux, alice, "New-pw-2"), since=t0)
                print(f"openldap account disabled -> refused: {took:.3f} s")
                until(lambda: mailbox() == "")

        # slapd dies; while it is down its data changes offline (no feed can see that)
        server.kill()
        for _ in range(2):
            served.wait_for(r"change feed: lost the connection")
        offline = tmp_path / "offline.ldif"
        offline.write_text(f"dn: {alice_dn}\nchangetype: modify\nreplace: mailEnabled\n"
                           "mailEnabled: TRUE\n")  # fmt: skip
        subprocess.run(
            ["/usr/sbin/slapmodify", "-F", str(server.config_dir), "-n1", "-l", str(offline)],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        server.start()
        reconnected = "every cache flushed (feed (re)connected)"
        while served.log.count(reconnected) < 4:  # two at start, one per worker now
            served.wait_for(r"every cache flushed \(feed")
        # the workers flushed their caches after the reconnect: the offline change shows
        for only in each_worker(served):
            with only:
                until(lambda: ok(mux, alice, "New-pw-2"), timeout=5.0)
                assert mailbox() == f"{DOMAIN}/alice/Maildir/"

        # and the feed goes on: the alias removed. The change carries no trace of it: the
        # address is dropped because the account was read with it (by entryUUID)
        for only in each_worker(served):
            with only:
                assert alias() == alice  # cached again for an hour
        ldapmodify(server, f"dn: {alice_dn}\nchangetype: modify\ndelete: mailAlias\n")
        for only in each_worker(served):
            with only:
                until(lambda: alias() == "")
    assert served.stop() == 0


def test_a_directory_without_a_feed_says_so_once_and_serves(
    tmp_path: Path, sockdir: Path, serving: list[Served]
) -> None:
    require_slapd()
    with SlapdServer(tls=False) as server:  # no syncprov
        base = server.new_subtree("nofeed")
        server.add(
            f"uid=erin,{base}",
            {"objectClass": ["inetOrgPerson"], "uid": ["erin"], "cn": ["E"], "sn": ["E"],
             "mail": [f"erin@{DOMAIN}"], "userPassword": [ssha("Erin-pw-1")]},
        )  # fmt: skip
        table = {
            "uris": [server.uri], "base_dn": base, "bind_dn": server.reader_dn,
            "bind_password_file": secret_file(tmp_path, server.reader_pw),
            "profile": "inetorgperson", "mail_domains": [DOMAIN], "connect_timeout": 2.0,
        }  # fmt: skip
        served = Served(feed_cli(tmp_path, sockdir, table, workers=1))
        serving.append(served)
        while "offers neither" not in served.log or "ready: " not in served.log:  # any order
            served.wait_for(r"offers neither syncrepl nor change notification|ready: \d+ listener")
        assert ok(sockdir / "mux", f"erin@{DOMAIN}", "Erin-pw-1")
        assert served.stop() == 0
    assert served.log.count("offers neither") == 1


# -- Samba AD: LDAP_SERVER_NOTIFICATION_OID --------------------------------------------------------


@pytest.mark.slow
def test_ad_changes_reach_the_sockets(
    samba_ad: AdDirectory, tmp_path: Path, sockdir: Path, serving: list[Served]
) -> None:
    require_postmap()
    ad = samba_ad.server
    user = ad.add_user("feedy", "F33dy-Passw0rd-1!", mail="feedy@corp.test")
    ad.set_proxy_addresses(user, ["SMTP:feedy@corp.test"])
    table = {
        "uris": [ad.uri], "base_dn": BASE_DN, "bind_dn": ad.service_dn,
        "bind_password_file": secret_file(tmp_path, ad.service_pw), "profile": "ad",
        "mail_domains": ["corp.test"], "auth_method": "bind", "timeout": 3.0,
        "connect_timeout": 2.0,
    }  # fmt: skip
    served = Served(feed_cli(tmp_path, sockdir, table, workers=1))
    serving.append(served)
    started(served, 1, "notification")
    mux, feedy = sockdir / "mux", "feedy@corp.test"
    sm = f"socketmap:unix:{sockdir / 'sm'}"
    try:
        with postmap_config() as pm:

            def alias() -> str:
                return postmap_q(pm, "f.eedy@corp.test", f"{sm}:alias")

            assert ok(mux, feedy, "F33dy-Passw0rd-1!")
            assert alias() == ""  # cached for an hour

            t0 = time.monotonic()
            ad.set_proxy_addresses(user, ["SMTP:feedy@corp.test", "smtp:f.eedy@corp.test"])
            took = until(lambda: alias() == feedy, since=t0)
            print(f"AD proxy address added (ldapmodify) -> socketmap answers it: {took:.3f} s")

            # disabled with samba-tool: it writes the database directly, not through the LDAP
            # server, and Samba re-runs notification searches for such changes every
            # SAMBA_RECHECK s. The cached OK goes.
            t0 = time.monotonic()
            ad.tool("user", "disable", "feedy")
            took = until(lambda: refused(mux, feedy, "F33dy-Passw0rd-1!"), SAMBA_BOUND, t0)
            print(f"AD account disabled (samba-tool) -> refused: {took:.3f} s")
            ad.modify(f"dn: {user.dn}\nchangetype: modify\nreplace: userAccountControl\n"
                      "userAccountControl: 512\n")  # fmt: skip
            until(lambda: ok(mux, feedy, "F33dy-Passw0rd-1!"))  # enabled again (over LDAP)

            # a new password set with samba-tool works although its failure was cached for an
            # hour. (With Samba that failed bind itself bumps badPwdCount, a change the feed
            # also reports; and Samba keeps accepting the old password for its "old password
            # allowed period", so the old one is not asserted refused.)
            assert refused(mux, feedy, "F33dy-Passw0rd-2!")  # a "wrong password", cached 1 h
            t0 = time.monotonic()
            ad.tool("user", "setpassword", "feedy", "--newpassword=F33dy-Passw0rd-2!")
            took = until(lambda: ok(mux, feedy, "F33dy-Passw0rd-2!"), SAMBA_BOUND, t0)
            print(f"AD password set (samba-tool) -> new password accepted: {took:.3f} s")

            t0 = time.monotonic()  # disabled over LDAP: 0x200 normal account | 0x2 disabled
            ad.modify(f"dn: {user.dn}\nchangetype: modify\nreplace: userAccountControl\n"
                      "userAccountControl: 514\n")  # fmt: skip
            took = until(lambda: refused(mux, feedy, "F33dy-Passw0rd-2!"), since=t0)
            print(f"AD account disabled (ldapmodify) -> refused: {took:.3f} s")
    finally:
        ad.tool("user", "delete", "feedy")
    assert served.stop() == 0
