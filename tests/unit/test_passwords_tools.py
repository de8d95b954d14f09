"""idsvc.passwords against hashes made live by tools nobody here wrote, and the reverse check.

doveadm pw (dovecot-core), slappasswd (slapd) and openssl passwd produce hashes at test time; we
must verify them. Then doveadm verifies the hashes *we* make (``doveadm pw -t``), which proves
that Dovecot reading our directory accepts them (e.g. Argon2 with p=1 for libsodium).
A missing tool skips locally and fails under CI=true.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from idsvc.config import PasswordSettings
from idsvc.errors import PasswordError
from idsvc.passwords import HASH_SCHEMES, PasswordHasher, identify, validate_hash

PASSWORDS = ["s3cret", "pässwörd ünïcode", "with space and $ymbols!'\"", "x" * 100]


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        reason = f"{name} is not installed"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def _run(*argv: str) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher(PasswordSettings(argon2_memory_kib=8192, argon2_time_cost=2))


DOVEADM_SCHEMES = [
    ("PLAIN", "PLAIN"),
    ("CLEAR", "PLAIN"),
    ("PLAIN.b64", "PLAIN"),
    ("PLAIN-MD5", "PLAIN-MD5"),
    ("LDAP-MD5", "LDAP-MD5"),
    ("MD5", "MD5-CRYPT"),
    ("SMD5", "SMD5"),
    ("SHA", "SHA"),
    ("SHA1", "SHA"),
    ("SSHA", "SSHA"),
    ("SSHA.hex", "SSHA"),
    ("SHA256", "SHA256"),
    ("SHA256.hex", "SHA256"),
    ("SSHA256", "SSHA256"),
    ("SHA512", "SHA512"),
    ("SSHA512", "SSHA512"),
    ("MD5-CRYPT", "MD5-CRYPT"),
    ("SHA256-CRYPT", "SHA256-CRYPT"),
    ("SHA512-CRYPT", "SHA512-CRYPT"),
    ("SHA512-CRYPT.b64", "SHA512-CRYPT"),
    ("BLF-CRYPT", "BLF-CRYPT"),
    ("CRYPT", "BLF-CRYPT"),  # Dovecot 2.3's CRYPT generates bcrypt
    ("DES-CRYPT", "DES-CRYPT"),
    ("ARGON2I", "ARGON2I"),
    ("ARGON2ID", "ARGON2ID"),
    ("PBKDF2", "PBKDF2"),
    ("SCRAM-SHA-1", "SCRAM-SHA-1"),
    ("SCRAM-SHA-256", "SCRAM-SHA-256"),
]


@pytest.mark.parametrize(("dovecot_scheme", "canonical"), DOVEADM_SCHEMES)
def test_doveadm_made_hashes(hasher: PasswordHasher, dovecot_scheme: str, canonical: str) -> None:
    doveadm = _tool("doveadm")
    pws = PASSWORDS[:1] if dovecot_scheme.startswith("ARGON2") else PASSWORDS
    for pw in pws:
        if dovecot_scheme == "DES-CRYPT":
            pw = pw[:8]  # DES reads 8 characters; longer inputs would verify with any tail
        stored = _run(doveadm, "pw", "-s", dovecot_scheme, "-p", pw)
        assert identify(stored) == canonical
        assert hasher.verify(pw, stored) is True
        assert hasher.verify("Q" + pw[1:], stored) is False
        truncated = (canonical == "DES-CRYPT" and len(pw.encode()) >= 8) or (
            canonical == "BLF-CRYPT" and len(pw) >= 72
        )
        assert hasher.verify(pw + "x", stored) is truncated  # bcrypt 72 bytes, DES 8 bytes
        assert hasher.verify(pw, validate_hash(stored)) is True


@pytest.mark.parametrize(("scheme", "rounds"), [("SHA512-CRYPT", 10000), ("SHA256-CRYPT", 1000)])
def test_doveadm_sha_crypt_rounds(hasher: PasswordHasher, scheme: str, rounds: int) -> None:
    stored = _run(_tool("doveadm"), "pw", "-s", scheme, "-r", str(rounds), "-p", "s3cret")
    assert f"rounds={rounds}$" in stored
    assert hasher.verify("s3cret", stored)
    assert not hasher.verify("s3creT", stored)
    strict = PasswordHasher(PasswordSettings(scheme=scheme, sha_crypt_rounds=rounds + 1))
    assert strict.needs_rehash(stored)


@pytest.mark.parametrize("scheme", HASH_SCHEMES)
def test_dovecot_verifies_our_hashes(hasher: PasswordHasher, scheme: str) -> None:
    doveadm = _tool("doveadm")
    for pw in PASSWORDS[:2]:
        stored = hasher.hash(pw, scheme)
        ok = subprocess.run(
            [doveadm, "pw", "-t", stored, "-p", pw], capture_output=True, text=True, timeout=60
        )
        assert ok.returncode == 0, ok.stderr
        assert "(verified)" in ok.stdout
        bad = subprocess.run(
            [doveadm, "pw", "-t", stored, "-p", pw + "x"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert bad.returncode != 0


def test_dovecot_verifies_default_argon2id() -> None:
    default = PasswordHasher(PasswordSettings())
    stored = default.hash("s3cret")
    assert stored.startswith("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$")
    out = _run(_tool("doveadm"), "pw", "-t", stored, "-p", "s3cret")
    assert "(verified)" in out


@pytest.mark.parametrize(
    ("slap_scheme", "canonical"),
    [("{SSHA}", "SSHA"), ("{SMD5}", "SMD5"), ("{SHA}", "SHA"), ("{MD5}", "LDAP-MD5")],
)
def test_slappasswd_made_hashes(hasher: PasswordHasher, slap_scheme: str, canonical: str) -> None:
    slappasswd = _tool("slappasswd")
    for pw in PASSWORDS:
        stored = _run(slappasswd, "-h", slap_scheme, "-s", pw)
        assert identify(stored) == canonical
        assert hasher.verify(pw, stored)
        assert not hasher.verify(pw + "x", stored)


@pytest.mark.parametrize(
    ("fmt", "canonical"), [("$6$%.16s", "SHA512-CRYPT"), ("$1$%.8s", "MD5-CRYPT")]
)
def test_slappasswd_crypt(hasher: PasswordHasher, fmt: str, canonical: str) -> None:
    stored = _run(_tool("slappasswd"), "-h", "{CRYPT}", "-c", fmt, "-s", "s3cret")
    assert stored.startswith("{CRYPT}$")
    assert identify(stored) == canonical
    assert hasher.verify("s3cret", stored)
    assert not hasher.verify("s3cre", stored)


@pytest.mark.parametrize(
    ("flag", "canonical"), [("-1", "MD5-CRYPT"), ("-5", "SHA256-CRYPT"), ("-6", "SHA512-CRYPT")]
)
def test_openssl_passwd(hasher: PasswordHasher, flag: str, canonical: str) -> None:
    openssl = _tool("openssl")
    for pw in PASSWORDS:
        stored = _run(openssl, "passwd", flag, pw)
        assert identify(stored) == canonical
        assert hasher.verify(pw, stored)
        assert hasher.verify(pw, "{CRYPT}" + stored)
        assert not hasher.verify(pw + "x", stored)


def test_openssl_apr1_is_refused_clearly(hasher: PasswordHasher) -> None:
    stored = _run(_tool("openssl"), "passwd", "-apr1", "s3cret")
    with pytest.raises(PasswordError, match="not a crypt string") as info:
        hasher.verify("s3cret", stored)
    assert "s3cret" not in str(info.value)
