"""TOTP secrets and recovery codes at rest (``idsvc.web.second_factor``, ``idsvc.web.keyring``):
sealed under a key file outside the database, bound to the account's subject and generation;
version-1 plaintext files migrated on open; renames keep the factor (a real slapd read through
the ``inetorgperson`` profile), a deleted and re-created account does not inherit it, and a
tampered or moved row refuses the login instead of letting it through without the factor."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import ldap
import pyotp
import pytest

from idsvc.model import Account, Address
from idsvc.web.keyring import KeyRing, SealError
from idsvc.web.second_factor import STEP, Owner, SecondFactors, _plain_digest
from tests.fixtures.slapd import SlapdServer
from tests.web.conftest import (
    PASSWORD,
    Browser,
    WebEnv,
    account_login,
    admin_login,
    open_web,
)

USER = "alice@example.test"
SECRET_RE = re.compile(r'<code id="totp-secret">([A-Z2-7]+)</code>')
CODES_RE = re.compile(r"<li><code>([0-9a-f-]+)</code></li>")


def key_path(env: WebEnv) -> Path:
    assert env.settings.web.second_factor_key is not None
    return env.settings.web.second_factor_key


def db_path(env: WebEnv) -> Path:
    return env.settings.api.state_path.parent / "web.db"  # type: ignore[union-attr]


async def enrol(b: Browser, address: str, password: str = PASSWORD) -> tuple[pyotp.TOTP, list[str]]:
    """Log ``b`` in and enrol TOTP; the app and the recovery codes."""
    assert (await account_login(b, address, password)).status_code == 303
    setup = await b.get("/account/totp")
    found = SECRET_RE.search(setup.text)
    assert found is not None
    totp = pyotp.TOTP(found.group(1))
    done = await b.submit("/account/totp", "/account/totp", {"code": totp.now()})
    assert done.status_code == 200, done.text[:300]
    codes = CODES_RE.findall(done.text)
    assert len(codes) == 10
    return totp, codes


def next_code(totp: pyotp.TOTP, steps: int = 1) -> str:
    """A code of a later step than the enrolment's (the current one is spent)."""
    return totp.at(time.time() + steps * STEP)


def assert_absent(data: bytes, secret_b32: str, codes: list[str]) -> None:
    assert secret_b32.encode() not in data
    assert secret_b32.lower().encode() not in data
    assert base64.b32decode(secret_b32) not in data
    for code in codes:
        assert code.encode() not in data
        assert code.replace("-", "").encode() not in data
        assert _plain_digest(code) not in data  # not even the unkeyed digest


async def test_database_holds_no_secret_and_the_key_lives_apart(web: WebEnv) -> None:
    await web.user(USER)
    totp, codes = await enrol(web.browser(), USER)
    data = db_path(web).read_bytes()
    assert_absent(data, totp.secret, codes)
    key = key_path(web)
    assert key.parent != db_path(web).parent
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert oct(db_path(web).stat().st_mode & 0o777) == "0o600"
    assert KeyRing.load(key).current == "k1"
    # and it still works from the sealed row
    assert (await account_login(web.browser(), USER, code=next_code(totp))).status_code == 303
    assert (await account_login(web.browser(), USER, code=codes[3])).status_code == 303


async def test_deleted_and_recreated_account_does_not_inherit(web: WebEnv) -> None:
    await web.user(USER)
    totp, codes = await enrol(web.browser(), USER)
    assert (await account_login(web.browser(), USER)).status_code == 401  # factor needed
    await web.runtime.provisioner.delete_user(USER, actor="test")
    await web.user(USER)  # same address, a new account
    b = web.browser()
    assert (await account_login(b, USER)).status_code == 303  # no factor of its own
    assert "Recovery codes left" not in (await b.get("/account")).text
    assert (
        sqlite3.connect(db_path(web)).execute("SELECT count(*) FROM sealed_totp").fetchone()[0] == 0
    )
    # the predecessor's codes do nothing for the new account, which can enrol its own
    totp2, _codes2 = await enrol(web.browser(), USER)
    assert totp2.secret != totp.secret
    assert (await account_login(web.browser(), USER, code=codes[0])).status_code == 401
    assert (await account_login(web.browser(), USER, code=next_code(totp2))).status_code == 303


async def test_deleted_in_the_admin_console_drops_the_factor_at_once(web: WebEnv) -> None:
    await web.user(USER)
    await enrol(web.browser(), USER)
    admin = web.browser()
    await admin_login(admin, web.admin_token)
    page = f"/admin/users/{USER}"
    revision = re.search(r'name="revision" value="(\d+)"', (await admin.get(page)).text)
    assert revision is not None
    gone = await admin.submit(page, f"{page}/delete", {"revision": revision.group(1)})
    assert gone.status_code == 303, gone.text[:300]
    with sqlite3.connect(db_path(web)) as conn:  # dropped now, not at the next login
        assert conn.execute("SELECT count(*) FROM sealed_totp").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM recovery_digest").fetchone()[0] == 0
    await web.user(USER)  # same second: the hook, not the creation time, made the difference
    assert (await account_login(web.browser(), USER)).status_code == 303


async def test_account_deleted_by_another_process_does_not_pass_it_on(web: WebEnv) -> None:
    """No deletion hook ran (the CLI deletes in its own process): the factor's generation (the
    account's creation time, to the second) tells the new account from the old one."""
    await web.user(USER)
    await enrol(web.browser(), USER)
    await web.runtime.directory.delete_account(Address.parse(USER))
    await asyncio.sleep(1.1)  # creation times have one-second resolution
    await web.user(USER)
    assert (await account_login(web.browser(), USER)).status_code == 303


async def test_row_moved_to_another_account_refuses(
    web: WebEnv, caplog: pytest.LogCaptureFixture
) -> None:
    """Mallory copies her own sealed secret over Alice's row: the row does not open for Alice,
    so neither Mallory's codes nor Alice's own work — refused and logged, never let through."""
    mallory = "mallory@example.test"
    await web.user(USER)
    await web.user(mallory)
    alice_totp, _ = await enrol(web.browser(), USER)
    mallory_totp, _ = await enrol(web.browser(), mallory)
    with sqlite3.connect(db_path(web)) as conn:
        kid, nonce, sealed = conn.execute(
            "SELECT kid, nonce, sealed FROM sealed_totp WHERE subject = ?", (mallory,)
        ).fetchone()
        conn.execute(
            "UPDATE sealed_totp SET kid = ?, nonce = ?, sealed = ? WHERE subject = ?",
            (kid, nonce, sealed, USER),
        )
    caplog.set_level(logging.ERROR, logger="idsvc.web.second_factor")
    for code in (next_code(mallory_totp), next_code(alice_totp), ""):
        assert (await account_login(web.browser(), USER, code=code)).status_code == 401
    assert any("refused" in r.getMessage() for r in caplog.records)
    assert mallory_totp.secret not in caplog.text
    assert alice_totp.secret not in caplog.text


async def test_flipped_byte_refuses(web: WebEnv) -> None:
    await web.user(USER)
    totp, _ = await enrol(web.browser(), USER)
    with sqlite3.connect(db_path(web)) as conn:
        (sealed,) = conn.execute("SELECT sealed FROM sealed_totp").fetchone()
        bad = bytes([sealed[0] ^ 1]) + bytes(sealed[1:])
        conn.execute("UPDATE sealed_totp SET sealed = ?", (bad,))
    assert (await account_login(web.browser(), USER, code=next_code(totp))).status_code == 401
    assert (await account_login(web.browser(), USER)).status_code == 401


async def test_lost_key_file_fails_closed(web: WebEnv, embedded_directory: Any) -> None:
    await web.user(USER)
    totp, codes = await enrol(web.browser(), USER)
    key_path(web).unlink()
    factors = SecondFactors(db_path(web), key_path(web))  # reopened, as after a restart
    try:
        owner = await owner_of(web, USER)
        assert await factors.enrolled(owner)  # still enrolled: no login without the factor
        with pytest.raises(Exception, match="key file"):
            await factors.verify(owner, next_code(totp))
        with pytest.raises(Exception, match="key file"):
            await factors.verify(owner, codes[0])
        assert not key_path(web).exists()  # never a fresh key over sealed rows
    finally:
        factors.close()


async def owner_of(web: WebEnv, address: str) -> Owner:
    account = await web.runtime.directory.find_account(Address.parse(address))
    assert account is not None
    return Owner.of(account, read_only=False)


async def test_rotation_reseals_under_the_new_first_key(web: WebEnv) -> None:
    await web.user(USER)
    totp, codes = await enrol(web.browser(), USER)
    key = key_path(web)
    old = key.read_text()
    fresh = base64.b64encode(os.urandom(32)).decode()
    key.write_text(f"k2 {fresh}\n{old}")
    SecondFactors(db_path(web), key).close()  # a restart: every row re-sealed under k2
    with sqlite3.connect(db_path(web)) as conn:
        assert {r[0] for r in conn.execute("SELECT kid FROM sealed_totp")} == {"k2"}
        assert {r[0] for r in conn.execute("SELECT kid FROM pepper")} == {"k2"}
    key.write_text(f"k2 {fresh}\n")  # the old key removed
    factors = SecondFactors(db_path(web), key)
    try:
        owner = await owner_of(web, USER)
        assert await factors.verify(owner, next_code(totp))
        assert await factors.verify(owner, codes[0])
    finally:
        factors.close()


V1_SCHEMA = """
CREATE TABLE totp (user TEXT PRIMARY KEY, secret TEXT NOT NULL, enrolled INTEGER NOT NULL,
                   last_step INTEGER NOT NULL DEFAULT 0);
CREATE TABLE recovery (user TEXT NOT NULL, digest BLOB NOT NULL, PRIMARY KEY (user, digest));
"""


async def test_version_one_plaintext_is_sealed_on_open(tmp_path: Path) -> None:
    """A file written by the first version (plaintext secret, unkeyed digests, keyed by address)
    holds no secret after opening, and its owner logs in with the old app and codes."""
    db, key = tmp_path / "state" / "web.db", tmp_path / "etc" / "web-totp.key"
    db.parent.mkdir()
    secret = pyotp.random_base32()
    codes = ["0123a-4567b", "89abc-def01"]
    with sqlite3.connect(db) as conn:
        conn.executescript(V1_SCHEMA)
        conn.execute("INSERT INTO totp VALUES (?, ?, ?, 0)", (USER, secret, int(time.time())))
        conn.executemany(
            "INSERT INTO recovery VALUES (?, ?)", [(USER, _plain_digest(c)) for c in codes]
        )
    assert secret.encode() in db.read_bytes()
    factors = SecondFactors(db, key)
    try:
        assert_absent(db.read_bytes(), secret, codes)
        account = Account(Address.parse(USER), None)
        owner = Owner.of(account, read_only=False)
        assert await factors.enrolled(owner)  # adopted by the account that owns the address
        assert await factors.verify(owner, pyotp.TOTP(secret).now())
        assert await factors.verify(owner, codes[1])
        assert await factors.recovery_left(owner) == 1
        other = Owner.of(Account(Address.parse("bob@example.test"), None), read_only=False)
        assert not await factors.enrolled(other)
    finally:
        factors.close()
    names = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master")}
    assert "totp" not in names
    assert "recovery" not in names


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no key"),
        ("# only a comment\n", "no key"),
        ("k1\n", "expected"),
        ("k1 not-base64!\n", "expected"),
        (f"k1 {base64.b64encode(b'short').decode()}\n", "expected"),
        (f"k 1 {base64.b64encode(bytes(32)).decode()}\n", "expected"),
        (f"{'k' * 33} {base64.b64encode(bytes(32)).decode()}\n", "expected"),
        (
            f"k1 {base64.b64encode(bytes(32)).decode()}\nk1 {base64.b64encode(bytes(32)).decode()}",
            "twice",
        ),
    ],
)
def test_malformed_key_files_are_refused(text: str, message: str) -> None:
    with pytest.raises(SealError, match=message):
        KeyRing.parse(text)


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "k" / "web-totp.key"
    KeyRing.create(key)
    assert oct(key.parent.stat().st_mode & 0o777) == "0o700"
    key.chmod(0o640)
    with pytest.raises(SealError, match="readable by others"):
        KeyRing.load(key)
    key.chmod(0o600)
    with pytest.raises(FileExistsError):
        KeyRing.create(key)  # never overwritten


def test_sealed_values_are_bound_to_their_owner(tmp_path: Path) -> None:
    ring = KeyRing.create(tmp_path / "key")
    kid, nonce, sealed = ring.seal(b"JBSWY3DPEHPK3PXP", b"alice")
    assert ring.open(kid, nonce, sealed, b"alice") == b"JBSWY3DPEHPK3PXP"
    for aad in (b"bob", b"alice\0", b""):
        with pytest.raises(SealError):
            ring.open(kid, nonce, sealed, aad)
    with pytest.raises(SealError, match="no longer holds"):
        ring.open("k9", nonce, sealed, b"alice")


# -- a corporate directory: rename keeps the factor, re-creation does not ------------------------

DOMAIN = "people.test"


def ssha(password: str) -> str:
    salt = os.urandom(4)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def person(uid: str, mail: str) -> dict[str, list[str]]:
    return {
        "objectClass": ["inetOrgPerson"],
        "uid": [uid],
        "cn": [uid],
        "sn": [uid],
        "mail": [mail],
        "userPassword": [ssha(PASSWORD)],
    }


async def test_rename_in_a_corporate_directory_keeps_the_factor(
    slapd: SlapdServer, tmp_path: Path
) -> None:
    from idsvc.directory.ldap.corporate import CorporateDirectory

    base = slapd.new_subtree(f"tf-{os.urandom(3).hex()}")
    slapd.add(f"ou=people,{base}", {"objectClass": ["organizationalUnit"], "ou": ["people"]})
    dn = f"uid=erin,ou=people,{base}"
    slapd.add(dn, person("erin", f"erin@{DOMAIN}"))
    settings = slapd.settings(
        base, profile="inetorgperson", mail_domains=(DOMAIN,), writer_dn="", writer_password=None
    )
    directory = await CorporateDirectory.open(settings)
    try:
        async with open_web(directory, tmp_path) as web:
            totp, _codes = await enrol(web.browser(), f"erin@{DOMAIN}")
            conn = slapd.connect()
            try:  # renamed: new address, same entry (same entryUUID)
                conn.modify_s(dn, [(ldap.MOD_REPLACE, "mail", [f"erin.new@{DOMAIN}".encode()])])
            finally:
                conn.unbind_s()
            renamed = f"erin.new@{DOMAIN}"
            assert (await account_login(web.browser(), renamed)).status_code == 401
            assert (
                await account_login(web.browser(), renamed, code=next_code(totp))
            ).status_code == 303
            conn = slapd.connect()
            try:  # deleted and created again with the same address: a new entryUUID
                conn.delete_s(dn)
            finally:
                conn.unbind_s()
            slapd.add(dn, person("erin", f"erin.new@{DOMAIN}"))
            b = web.browser()
            assert (await account_login(b, renamed)).status_code == 303
            assert "Recovery codes left" not in (await b.get("/account")).text
    finally:
        await directory.close()
