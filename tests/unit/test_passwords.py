"""idsvc.passwords: fixed vectors, canonical forms, errors, needs_rehash, hypothesis properties.

Live vectors made by doveadm / slappasswd / openssl at test time are in test_passwords_tools.py;
timing and threads in test_passwords_cost.py.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idsvc.config import PasswordSettings
from idsvc.errors import ConfigError, PasswordError
from idsvc.passwords import (
    HASH_SCHEMES,
    SCHEMES,
    STRONG_SCHEMES,
    PasswordHasher,
    identify,
    validate_hash,
)

PW = "s3cret"
# cheap Argon2 so that property tests stay fast; the defaults are exercised in the other files
FAST = PasswordSettings(argon2_memory_kib=1024, argon2_time_cost=1, bcrypt_cost=4)

# (stored, canonical scheme) for password "s3cret". The first three are protocols.md §8.8; the
# others were produced once by doveadm 2.3.19, slappasswd 2.5, openssl 3 and libpass 1.9.
VECTORS: list[tuple[str, str]] = [
    ("{SSHA}d14l+Z9NxT7CNv9vgUcYN2BAzoMBAgME", "SSHA"),
    ("{PLAIN-MD5}33e1b232a4e6fa0028a6670753749a17", "PLAIN-MD5"),
    ("{SHA256}HsHCa1DV08WNlYMYGvgHZlX+AHVr9yhZQLo2cPmfy6A=", "SHA256"),
    ("{PLAIN}s3cret", "PLAIN"),
    ("{CLEAR}s3cret", "PLAIN"),
    ("{CLEARTEXT}s3cret", "PLAIN"),
    ("{PLAIN.b64}czNjcmV0", "PLAIN"),
    ("{plain.HEX}733363726574", "PLAIN"),
    ("{LDAP-MD5}M+GyMqTm+gAopmcHU3SaFw==", "LDAP-MD5"),
    ("{MD5}M+GyMqTm+gAopmcHU3SaFw==", "LDAP-MD5"),  # OpenLDAP's meaning of {MD5}
    ("{MD5}$1$hX3SfMkJ$IXZ8ZR5RYcSMQHKeSvJc71", "MD5-CRYPT"),  # Dovecot's meaning
    ("{SMD5}o20wGw7B88NdNCawtJjJnusuOiM=", "SMD5"),
    ("{SHA}/vNB+F2HQ559kaLUZbmHHvZrXpg=", "SHA"),
    ("{SHA1}/vNB+F2HQ559kaLUZbmHHvZrXpg=", "SHA"),
    ("{SSHA}A0DVoh79mtbwLTA7Jcc87CXH2yVTW2B3", "SSHA"),
    ("{SSHA}FmqRCqcRNbbkm9uXhQeKXmoSLa+70RWQ", "SSHA"),  # slappasswd
    ("{SSHA256}9GbXL45SRNjG+f1AD3FDJnP7iyAS/m0UPY+cg3vkL/skMGiZ", "SSHA256"),
    (
        "{SHA512}lcia3d5QY1fsXv0O5BrCQe/W+xAJp2gMFQHqgXA0K4y/Dy2Ti1YpVJDxnx/F+ijQmxWE6qCcmmsvd3Y"
        "jKZzVIQ==",
        "SHA512",
    ),
    (
        "{SSHA512}QzShKSHS/VIzSdz2WjHY/Zz8COYdEVxxxnWh4G/RCy2on4dozNtNDrLeiIz7uag3wkd7it2LrnZ+S1I"
        "DHi9DarYn1QQ=",
        "SSHA512",
    ),
    ("{SHA256.HEX}1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0", "SHA256"),
    ("{MD5-CRYPT}$1$NrbmPdM6$ScuPGBs8VUOS3A1HGJLor1", "MD5-CRYPT"),
    ("$1$vX/oYtuY$VVcsFyjPnsKtniH3sNZ2w/", "MD5-CRYPT"),  # openssl passwd -1
    (
        "{SHA256-CRYPT}$5$V630wzx300K1649W$KxEh9NW1WEDGLPS5JLFBSZEfGZ2fRosMzThMqpkvGy3",
        "SHA256-CRYPT",
    ),
    ("$5$bHmXkD4TXHlhWdku$3cIgI9.M5uRSOc5Xbw2sB4rvE.oRyZkFcPEt4u2iee1", "SHA256-CRYPT"),
    (
        "{SHA512-CRYPT}$6$PcUySqvrtIxiLOfL$v8eTdohe5SrLpdg4JbMets2EeWHinI6BE1A1bzS.wbwlAP5TJR0nAR"
        "wA8lbKNZHdd/sOFBgFLLcSz44aNIfKT/",
        "SHA512-CRYPT",
    ),
    (
        "$6$wxdsk/c9WCjfkXzp$c46w2P0holTemMJwIfw3vtuKpESDM33EnP9Pfyrmc1qbfsb1PxT6YyFMCVl65GXQ5vEq"
        "7cSDm4z5S0xIeU5KZ.",
        "SHA512-CRYPT",
    ),
    ("{BLF-CRYPT}$2y$05$KEQi/3KMDlaNG/6y3RdS5.wYSKZcM7HvYJ8tILwTuusRrBCNlT1Hu", "BLF-CRYPT"),
    ("{CRYPT}$2y$05$6E4jvFqOOO5wiUlA0PASL.opaUi2hFYcEvhBalA512gBhdRemyoWy", "BLF-CRYPT"),
    ("{DES-CRYPT}POeRk7JNlDr/2", "DES-CRYPT"),
    ("{CRYPT}POeRk7JNlDr/2", "DES-CRYPT"),
    (
        "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$+0SdDuH76dzoeIZ1zX4MEw$ZNsLAuBfMDxwdJEpvJkcXi"
        "llgRBEeSnpKWvi5/azJ6Y",
        "ARGON2ID",
    ),
    (
        "{ARGON2I}$argon2i$v=19$m=32768,t=4,p=1$IDoLEOmQhkwPiC48QxoozA$5JCtMVYBrQVCur5FButX7nY/b"
        "HDGMIt1hu6kaBjV8nk",
        "ARGON2I",
    ),
    ("{PBKDF2}$1$Xyw4XFyqooTytZR9$5000$68359c03b73bfd3676b9ccbb74b070261bdabf26", "PBKDF2"),
    (
        "{SCRAM-SHA-1}4096,/aiKmBzG7SDp6PJ4R7MomA==,gYNn5AkSSG7IHxYlZat3gxnsG+U=,tAR9pxbZ3lsbYPug"
        "Ae1Ncy8xYxw=",
        "SCRAM-SHA-1",
    ),
    (
        "{SCRAM-SHA-256}4096,PxZrhTE8VYElPYtRCYkINg==,mTCvjC1KUzBIrdNHyTYLWuoZgUiyfe1Oa5QM/H4jev"
        "Q=,WM+a2/7XnEHV6rZEorvVW7XmsRLv3uHFLxMspTWaiFs=",
        "SCRAM-SHA-256",
    ),
    (
        "$pbkdf2-sha256$29000$d27NGcP4v5cSwhhjzPk/5w$9JapNh8M6KzAutl9vUHavLsKTCbd9lMW.rj4Ke4KRe0",
        "PASSLIB-PBKDF2-SHA256",
    ),
    (
        "$bcrypt-sha256$v=2,t=2b,r=12$5zI4tLapDRB5E2RSnzfwXO$0yPr95F6ZpRiQWXKQ9.PecBmoXE4hIe",
        "PASSLIB-BCRYPT-SHA256",
    ),
]


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher(FAST)


@pytest.mark.parametrize(("stored", "scheme"), VECTORS)
def test_known_vectors(hasher: PasswordHasher, stored: str, scheme: str) -> None:
    assert identify(stored) == scheme
    assert hasher.verify(PW, stored) is True
    assert hasher.verify(PW + "x", stored) is False
    assert hasher.verify("S3cret", stored) is False
    canonical = validate_hash(stored)
    assert identify(canonical) == scheme
    assert validate_hash(canonical) == canonical  # idempotent
    assert hasher.verify(PW, canonical) is True


def test_drepper_sha_crypt_vectors(hasher: PasswordHasher) -> None:
    # the test vectors of the SHA-crypt specification (salt "saltstring", default rounds)
    v6 = (
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdF"
        "CoEOfaS35inz1"
    )
    assert hasher.verify("Hello world!", v6)
    assert hasher.verify(
        "Hello world!", "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"
    )
    assert not hasher.verify("Hello world", v6)


@pytest.mark.parametrize(
    ("stored", "canonical"),
    [
        ("{MD5}M+GyMqTm+gAopmcHU3SaFw==", "{LDAP-MD5}M+GyMqTm+gAopmcHU3SaFw=="),
        ("{ssha1}/vNB+F2HQ559kaLUZbmHHvZrXpg=", None),  # unknown alias -> error below
        ("{SHA1}/vNB+F2HQ559kaLUZbmHHvZrXpg=", "{SHA}/vNB+F2HQ559kaLUZbmHHvZrXpg="),
        ("{SHA}fef341f85d87439e7d91a2d465b9871ef66b5e98", "{SHA}/vNB+F2HQ559kaLUZbmHHvZrXpg="),
        ("{PLAIN-MD5}M+GyMqTm+gAopmcHU3SaFw==", "{PLAIN-MD5}33e1b232a4e6fa0028a6670753749a17"),
        ("{CLEAR.b64}czNjcmV0", "{PLAIN}s3cret"),
        ("{PLAIN.b64}AAE=", "{PLAIN.b64}AAE="),  # not printable: stays encoded
        ("$1$vX/oYtuY$VVcsFyjPnsKtniH3sNZ2w/", "{MD5-CRYPT}$1$vX/oYtuY$VVcsFyjPnsKtniH3sNZ2w/"),
        ("{CRYPT}POeRk7JNlDr/2", "{DES-CRYPT}POeRk7JNlDr/2"),
        (
            "{SHA256-CRYPT.b64}JDUkVjYzMHd6eDMwMEsxNjQ5VyRLeEVoOU5XMVdFREdMUFM1SkxGQlNaRW"
            "ZHWjJmUm9zTXpUaE1xcGt2R3kz",
            "{SHA256-CRYPT}$5$V630wzx300K1649W$KxEh9NW1WEDGLPS5JLFBSZEfGZ2fRosMzThMqpkvGy3",
        ),
        ("{ssha}d14l+Z9NxT7CNv9vgUcYN2BAzoMBAgME", "{SSHA}d14l+Z9NxT7CNv9vgUcYN2BAzoMBAgME"),
        ("{SSHA}d14l+Z9NxT7CNv9vgUcYN2BAzoMBAgME", "{SSHA}d14l+Z9NxT7CNv9vgUcYN2BAzoMBAgME"),
        ("{SHA256}HsHCa1DV08WNlYMYGvgHZlX+AHVr9yhZQLo2cPmfy6A", None),  # unpadded: accepted
    ],
)
def test_canonical_forms(stored: str, canonical: str | None) -> None:
    if canonical is None and stored.startswith("{ssha1}"):
        with pytest.raises(PasswordError, match="unknown password scheme"):
            validate_hash(stored)
        return
    got = validate_hash(stored)
    if canonical is not None:
        assert got == canonical
    assert identify(got) == identify(stored)


def test_unpadded_base64_verifies(hasher: PasswordHasher) -> None:
    assert hasher.verify(PW, "{SHA256}HsHCa1DV08WNlYMYGvgHZlX+AHVr9yhZQLo2cPmfy6A")


def test_ssha_salt_of_any_length(hasher: PasswordHasher) -> None:
    for salt in (b"\x01", b"\x01\x02\x03\x04", bytes(range(40))):
        digest = hashlib.sha1(PW.encode() + salt).digest()
        stored = "{SSHA}" + base64.b64encode(digest + salt).decode()
        assert hasher.verify(PW, stored)
        assert not hasher.verify("other", stored)
    # SSHA512 with a 16-byte salt (the digest is 64 bytes)
    salt = b"S" * 16
    stored = "{SSHA512}" + base64.b64encode(hashlib.sha512(b"pw" + salt).digest() + salt).decode()
    assert hasher.verify("pw", stored)


SECRET = "Tr0ub4dor&3"


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        ("", "empty"),
        (SECRET, "no {SCHEME} prefix"),  # unprefixed plaintext is never treated as plaintext
        ("POeRk7JNlDr/2", "no {SCHEME} prefix"),  # bare DES-looking value: refused, not guessed
        ("{FOO}" + SECRET, "unknown password scheme {FOO}"),
        ("{SSHA.rot13}" + SECRET, "unknown encoding"),
        ("{SSHA" + SECRET, "malformed {SCHEME} prefix"),
        ("{}" + SECRET, "malformed"),
        ("{PLAIN}", "empty password"),
        ("{SSHA}" + SECRET, "invalid base64"),
        ("{SSHA}d14l+Z9NxT7CNv9vgUcYN2BAzoM=", "shorter than 21 bytes"),
        ("{SHA}/vNB+F2HQ559kaLUZbmHHvZrXp==", "expected 20"),
        ("{SHA256.hex}2d7116", "expected 32"),
        ("{SHA256.hex}zz" + "0" * 62, "invalid hex"),
        ("{PLAIN-MD5}33e1b232a4e6fa0028a6670753749a1", "23 bytes, expected 16"),
        ("{SHA512-CRYPT}$6$PcUySqvrtIxiLOfL$v8eTdohe5SrLpdg4Jb", "not a crypt string"),
        ("{CRYPT}$7$abc", "not a crypt string"),
        ("$6$rounds=999$abc$" + "a" * 86, "rounds=999 outside"),
        ("$6$rounds=5000000$abc$" + "a" * 86, "outside 1000..1000000"),
        ("{BLF-CRYPT}$2y$03$" + "a" * 53, "cost 3 outside"),
        ("{BLF-CRYPT}$2y$25$" + "a" * 53, "cost 25 outside"),
        ("{BLF-CRYPT}$2y$10$" + "a" * 52, "not a crypt string"),
        (
            "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$+0SdDuH76dzoeIZ1zX4MEw",
            "not an .argon2i./.argon2id. string",
        ),
        ("{ARGON2ID}$argon2id$v=19$m=9999999,t=3,p=1$+0SdDuH76dzoeIZ1zX4MEw$ZNsL", "limits"),
        ("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$+0SdDu$ZNsLAuBfMDxwdJEpvJkcXi", "too short"),
        (
            "{ARGON2ID}$argon2id$v=19$m=0,t=3,p=1$+0SdDuH76dzoeIZ1zX4MEw$ZNsLAuBfMDxwdJEpvJkcXi",
            "invalid",
        ),
        (
            "{ARGON2ID}$argon2id$v=19$m=4096,t=0,p=1$+0SdDuH76dzoeIZ1zX4MEw$ZNsLAuBfMDxwdJEpvJkcXi",
            "invalid",
        ),
        ("$argon2d$v=19$m=65536,t=3,p=1$+0SdDuH76dzoeIZ1zX4MEw$ZNsLAuBfMDxwdJEpvJkcXi", "argon2"),
        ("{PBKDF2}$1$salt$5000$abcd", "expected .1.<salt>"),
        ("{PBKDF2}$1$salt$0$" + "a" * 40, "rounds outside"),
        ("{SCRAM-SHA-256}4096,c2FsdA==,AAAA,AAAA", "wrong key size"),
        ("{SCRAM-SHA-1}" + SECRET, "expected <iterations>"),
        ("$pbkdf2-sha256$29000$d27NGcP4v5cSwhhjzPk", "malformed passlib"),
        (
            "$pbkdf2-sha256$99000000$d27NGcP4v5cSwhhjzPk/5w$9JapNh8M6KzAutl9vUHavLsKTCbd9lMW.rj4Ke4KRe0",
            "limit",
        ),
        ("{PLAIN}" + "x" * 20000, "longer than 16384"),
        ("$6$sälz$" + "a" * 86, "not a crypt string"),
        ("{SHA512-CRYPT}$6$s\u0663lt$" + "a" * 86, "not a crypt string"),
        (
            "$pbkdf2-sha256$29000$d27NGcP4v5cSwhhjzPk/5w$9JapNh8M6KzAutl9vUHavLsKTCbd9lMW.rj4Ke4KRé",
            "ASCII",
        ),
    ],
)
def test_unusable_hashes(hasher: PasswordHasher, stored: str, message: str) -> None:
    for call in (identify, validate_hash, lambda s: hasher.verify(SECRET, s), hasher.needs_rehash):
        with pytest.raises(PasswordError, match=message) as info:
            call(stored)
        assert SECRET not in str(info.value)
        assert "s3cret" not in str(info.value)


def test_wrong_types_are_password_errors(hasher: PasswordHasher) -> None:
    with pytest.raises(PasswordError, match="must be a string"):
        identify(b"{PLAIN}x")  # type: ignore[arg-type]


def test_label_never_beats_content(hasher: PasswordHasher) -> None:
    # a weak MD5-CRYPT string labelled SHA512-CRYPT is still MD5-CRYPT (and so needs a rehash)
    stored = "{SHA512-CRYPT}$1$NrbmPdM6$ScuPGBs8VUOS3A1HGJLor1"
    assert identify(stored) == "MD5-CRYPT"
    assert hasher.verify(PW, stored)
    assert hasher.needs_rehash(stored)


def test_empty_and_nul_passwords_never_match(hasher: PasswordHasher) -> None:
    assert not hasher.verify("", "{PLAIN.b64}AA==")
    assert not hasher.verify("\0", "{PLAIN.b64}AA==")
    stored = hasher.hash("abc", "SHA512-CRYPT")
    assert not hasher.verify("abc\0def", stored)  # crypt(3) would stop at the NUL
    for bad in ("", "a\0b"):
        with pytest.raises(PasswordError, match="refusing"):
            hasher.hash(bad)


def test_schemes_constants() -> None:
    assert set(HASH_SCHEMES) <= set(SCHEMES)
    assert {"ARGON2ID", "BLF-CRYPT", "SHA512-CRYPT"} <= STRONG_SCHEMES
    assert not {"PLAIN", "SSHA", "SHA", "MD5-CRYPT", "DES-CRYPT", "SSHA512"} & STRONG_SCHEMES
    for stored, scheme in VECTORS:
        assert scheme in SCHEMES, stored


@pytest.mark.parametrize("scheme", HASH_SCHEMES)
def test_hash_every_scheme(hasher: PasswordHasher, scheme: str) -> None:
    stored = hasher.hash(PW, scheme)
    assert stored.startswith("{" + scheme + "}")
    assert identify(stored) == scheme
    assert validate_hash(stored) == stored
    assert hasher.verify(PW, stored)
    assert not hasher.verify(PW + "x", stored)
    assert stored != hasher.hash(PW, scheme)  # fresh salt every time


def test_hash_refuses_unknown_or_unsafe(hasher: PasswordHasher) -> None:
    with pytest.raises(PasswordError, match="cannot make new PLAIN"):
        hasher.hash(PW, "PLAIN")
    with pytest.raises(PasswordError, match="72"):
        hasher.hash("x" * 73, "BLF-CRYPT")
    with pytest.raises(PasswordError, match="at most 511 bytes"):
        hasher.hash("x" * 600, "SHA512-CRYPT")
    long_pw = "é" * 400  # 800 bytes: fine for Argon2 and SSHA
    assert hasher.verify(long_pw, hasher.hash(long_pw, "ARGON2ID"))
    assert hasher.verify(long_pw, hasher.hash(long_pw, "SSHA512"))


def test_bcrypt_reads_72_bytes_like_every_other_implementation(hasher: PasswordHasher) -> None:
    stored = hasher.hash("a" * 72, "BLF-CRYPT")
    assert hasher.verify("a" * 72 + "tail", stored)  # what Dovecot and libc crypt also say


def test_defaults_and_config_errors() -> None:
    default = PasswordHasher(PasswordSettings())
    assert default.scheme == "ARGON2ID"
    for bad in ("SSHA", "PLAIN", "NOPE", "MD5-CRYPT"):
        with pytest.raises(ConfigError, match=r"passwords\.scheme"):
            PasswordHasher(PasswordSettings(scheme=bad))
    assert PasswordHasher(PasswordSettings(scheme="blf-crypt")).scheme == "BLF-CRYPT"


def _settings(**kw: object) -> PasswordSettings:
    base: dict[str, object] = {"argon2_memory_kib": 4096, "argon2_time_cost": 2, "bcrypt_cost": 6}
    base.update(kw)
    return PasswordSettings.model_validate(base)


def test_needs_rehash_matrix() -> None:
    argon = PasswordHasher(_settings())
    weaker_mem = PasswordHasher(_settings(argon2_memory_kib=2048)).hash(PW)
    weaker_time = PasswordHasher(_settings(argon2_time_cost=1)).hash(PW)
    stronger = PasswordHasher(_settings(argon2_time_cost=3, argon2_memory_kib=8192)).hash(PW)
    assert argon.needs_rehash(argon.hash(PW)) is False
    assert argon.needs_rehash(stronger) is False
    assert argon.needs_rehash(weaker_mem) is True
    assert argon.needs_rehash(weaker_time) is True
    for scheme in ("ARGON2I", "BLF-CRYPT", "SHA512-CRYPT", "SSHA512", "SSHA"):
        assert argon.needs_rehash(argon.hash(PW, scheme)) is True, scheme
    for stored, _ in VECTORS:
        assert argon.needs_rehash(stored) is (
            identify(stored) != "ARGON2ID" or "m=65536" not in stored
        )

    blf = PasswordHasher(_settings(scheme="BLF-CRYPT"))
    assert blf.needs_rehash(blf.hash(PW)) is False
    assert blf.needs_rehash(PasswordHasher(_settings(bcrypt_cost=5)).hash(PW, "BLF-CRYPT"))
    assert not blf.needs_rehash(PasswordHasher(_settings(bcrypt_cost=7)).hash(PW, "BLF-CRYPT"))
    assert blf.needs_rehash(argon.hash(PW))  # a different scheme than configured

    sha = PasswordHasher(_settings(scheme="SHA512-CRYPT", sha_crypt_rounds=10000))
    own = sha.hash(PW)
    assert "$rounds=10000$" in own
    assert sha.needs_rehash(own) is False
    default_rounds = PasswordHasher(_settings(scheme="SHA512-CRYPT")).hash(PW)
    assert "rounds=" not in default_rounds  # 5000 is implied, as Dovecot writes it
    assert sha.needs_rehash(default_rounds) is True
    assert PasswordHasher(_settings(scheme="SHA512-CRYPT")).needs_rehash(own) is False
    assert sha.needs_rehash(sha.hash(PW, "SHA256-CRYPT")) is True


def test_is_cheap() -> None:
    cheap = {"PLAIN", "PLAIN-MD5", "LDAP-MD5", "SMD5", "SHA", "SSHA", "SHA256", "SSHA256"}
    cheap |= {"SHA512", "SSHA512", "DES-CRYPT"}
    for stored, scheme in VECTORS:
        assert PasswordHasher.is_cheap(stored) is (scheme in cheap), scheme
    assert PasswordHasher.is_cheap("{FOO}x") is True  # fails at once in verify


passwords = st.text(
    alphabet=st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=60,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pw=passwords, scheme=st.sampled_from(HASH_SCHEMES))
def test_property_hash_verifies_only_itself(pw: str, scheme: str) -> None:
    hasher = PasswordHasher(FAST)
    if scheme == "BLF-CRYPT" and len(pw.encode()) > 72:
        with pytest.raises(PasswordError, match="72"):
            hasher.hash(pw, scheme)
        return
    stored = hasher.hash(pw, scheme)
    assert hasher.verify(pw, stored)
    if scheme != "BLF-CRYPT" or len(pw.encode()) < 72:
        assert not hasher.verify(pw + "x", stored)
    assert validate_hash(stored) == stored


@settings(max_examples=300, deadline=None)
@given(
    stored=st.one_of(
        st.text(max_size=120),
        st.builds(
            lambda name, body: "{" + name + "}" + body,
            st.sampled_from([*SCHEMES, "SHA256.hex", "PLAIN.b64", "CRYPT.b64", "X"]),
            st.text(max_size=120),
        ),
        st.builds(
            lambda head, body: head + body,
            st.sampled_from(
                [
                    *("$1$", "$5$", "$6$", "$6$rounds=", "$2y$10$", "$argon2id$", "$pbkdf2$"),
                    *("$pbkdf2-sha256$29000$", "$bcrypt-sha256$", "{PBKDF2}$1$", "{SCRAM-SHA-1}4,"),
                ]
            ),
            st.one_of(st.text(alphabet="./0-9A-Za-z$=,", max_size=120), st.text(max_size=120)),
        ),
    )
)
def test_property_parser_total(stored: str) -> None:
    """Any string either parses (and round-trips) or raises PasswordError, nothing else."""
    try:
        canonical = validate_hash(stored)
    except PasswordError:
        return
    assert identify(canonical) == identify(stored)
    assert validate_hash(canonical) == canonical


@settings(max_examples=60, deadline=None)
@given(pw=passwords)
def test_property_plain_round_trip(pw: str) -> None:
    hasher = PasswordHasher(FAST)
    stored = validate_hash("{PLAIN.b64}" + base64.b64encode(pw.encode()).decode())
    assert hasher.verify(pw, stored)
    assert not hasher.verify(pw + "x", stored)
