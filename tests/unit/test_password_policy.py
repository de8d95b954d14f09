"""``idsvc.password_policy`` and the scheme classification in ``idsvc.passwords``: table-driven
rule checks, hash classes per scheme, the import matrix per role and switch, settings
validation, the blocklist (shipped and custom), and hypothesis properties."""

from __future__ import annotations

import base64
import gzip
import hashlib
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from passlib import hash as passlib_hash

from idsvc.config import PasswordSettings, Settings
from idsvc.errors import ConfigError, PasswordError
from idsvc.password_policy import Blocklist, PasswordPolicy, PolicyViolation, Role
from idsvc.passwords import (
    CANONICAL_SCHEMES,
    HashStrength,
    PasswordHasher,
    classify,
    cleartext_of,
    max_password_bytes,
)

POLICY = PasswordPolicy.from_settings(Settings())
HASHER = PasswordHasher(PasswordSettings(scheme="SHA512-CRYPT", sha_crypt_rounds=1000))
MD5 = "{MD5}" + base64.b64encode(hashlib.md5(b"password").digest()).decode()


def _violation(password: str, policy: PasswordPolicy, **kw: tuple[str, ...]) -> PolicyViolation:
    try:
        policy.check_password(password, **kw)
    except PolicyViolation as exc:
        return exc
    raise AssertionError(f"{password!r} passed the policy")


# every message's fixed wording (one violation per rule): a password that is a piece of it (say
# "pass", from "password policy") appears in a message without being echoed
WORDING = "\n".join(
    str(_violation(password, POLICY, context=("alice.smith@example.org",)))
    for password in (
        "short",
        "x" * 1025,
        "twelve chars\n",
        "alice.smith@example.org",
        "password1234",
    )
)


def _rule(password: str, policy: PasswordPolicy = POLICY, **kw: tuple[str, ...]) -> str | None:
    try:
        policy.check_password(password, **kw)
    except PolicyViolation as exc:
        message, rule = str(exc), exc.rule
    else:
        return None
    # never echoed: absent from the message, or only there as a piece of the fixed wording
    assert password not in message or len(password) < 4 or password in WORDING, message
    return rule


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("", "min_length"),
        ("a", "min_length"),
        ("abcdefghijk", "min_length"),  # 11
        ("abcdefghijkl", None),  # 12
        ("é" * 12, None),  # 12 code points, 24 bytes
        ("\U0001f511" * 11, "min_length"),  # 44 bytes but 11 code points
        ("x" * 1024, None),
        ("x" * 1025, "max_length"),
        ("\U0001f511" * 257, "max_length"),  # 1028 bytes > auth.max_password_length 1024
        ("\U0001f511" * 256, None),  # exactly 1024 bytes
        ("twelve chars\n", "control_characters"),
        ("twelve\x00chars!", "control_characters"),
        ("\ttwelve chars", "control_characters"),
        ("twelve chars\r", "control_characters"),
        ("twelve\x1bchars!", "control_characters"),
        ("twelve\x7fchars!", "control_characters"),
        ("twelve\x9bchars!", "control_characters"),  # C1
        ("twelve\u2028chars!", "control_characters"),
        ("twelve\u2029chars!", "control_characters"),
        ("twelve\ud800chars!", "control_characters"),  # lone surrogate
        ("twelve\u00a0chars!", None),  # no-break space is a space
        ("twelve\u200dchars!", None),  # ZWJ (emoji sequences) is a format character
        ("password1234", "blocklist"),
        ("PASSWORD1234", "blocklist"),
        ("PaSsWoRd1234", "blocklist"),
        ("1qaz2wsx3edc", "blocklist"),
        ("qwertyuiopasdfgh", None),
    ],
)
def test_password_rules(password: str, rule: str | None) -> None:
    assert _rule(password) == rule


def test_context_words_are_refused_case_insensitively() -> None:
    context = ("alice.smith@example.org", "alice.smith")
    assert _rule("Alice.Smith@Example.org", context=context) == "context"
    assert _rule("ALICE.SMITH", context=("x@y.org", "alice.smith")) == "min_length"
    assert _rule("alice.smith!", context=context) is None
    assert _rule("alice.smith1", context=("alice.smith1@example.org", "alice.smith1")) == "context"


def test_violation_messages_name_the_rule_and_the_limit() -> None:
    with pytest.raises(PolicyViolation, match=r"password policy \(min_length\): .* 12 "):
        POLICY.check_password("short")
    relaxed = PasswordPolicy.from_settings(
        Settings(passwords=PasswordSettings(min_length=8, max_length=64, blocklist=False))
    )
    assert _rule("password", relaxed) is None
    assert _rule("seven77", relaxed) == "min_length"
    assert _rule("y" * 65, relaxed) == "max_length"
    assert relaxed.blocklist is None


def test_scheme_byte_limits_cap_the_policy() -> None:
    for scheme, limit in (("BLF-CRYPT", 72), ("SHA512-CRYPT", 511), ("ARGON2ID", 1024)):
        policy = PasswordPolicy.from_settings(Settings(passwords=PasswordSettings(scheme=scheme)))
        assert policy.max_bytes == limit
        assert _rule("b" * limit, policy) is None
        assert _rule("b" * (limit + 1), policy) == "max_length"
    assert max_password_bytes("ARGON2ID") is None
    assert max_password_bytes("ssha512") is None


def test_every_canonical_scheme_has_a_class() -> None:
    expected = {
        "PLAIN": HashStrength.CLEARTEXT,
        "LDAP-MD5": HashStrength.UNSALTED,
        "PLAIN-MD5": HashStrength.UNSALTED,
        "SHA": HashStrength.UNSALTED,
        "SHA512": HashStrength.UNSALTED,
        "DES-CRYPT": HashStrength.UNSALTED,
        "SSHA": HashStrength.SALTED,
        "SMD5": HashStrength.SALTED,
        "MD5-CRYPT": HashStrength.SALTED,
        "SHA512-CRYPT": HashStrength.SLOW,
        "ARGON2ID": HashStrength.SLOW,
        "SCRAM-SHA-256": HashStrength.SLOW,
        "PASSLIB-BCRYPT-SHA256": HashStrength.SLOW,
    }
    for scheme, strength in expected.items():
        assert CANONICAL_SCHEMES[scheme] is strength, scheme


@pytest.mark.parametrize(
    ("stored", "scheme", "strength"),
    [
        ("{PLAIN}secret", "PLAIN", HashStrength.CLEARTEXT),
        ("{CLEAR}secret", "PLAIN", HashStrength.CLEARTEXT),
        ("{PLAIN.b64}" + base64.b64encode(b"secret").decode(), "PLAIN", HashStrength.CLEARTEXT),
        (MD5, "LDAP-MD5", HashStrength.UNSALTED),
        ("{PLAIN-MD5}" + hashlib.md5(b"x").hexdigest(), "PLAIN-MD5", HashStrength.UNSALTED),
        ("{SHA}" + base64.b64encode(hashlib.sha1(b"x").digest()).decode(), "SHA", "unsalted"),
        ("{CRYPT}abJnggxhB/yWI", "DES-CRYPT", HashStrength.UNSALTED),
        (HASHER.hash("x", "SSHA"), "SSHA", HashStrength.SALTED),
        (HASHER.hash("x", "SSHA512"), "SSHA512", HashStrength.SALTED),
        (HASHER.hash("x"), "SHA512-CRYPT", HashStrength.SLOW),
        (passlib_hash.pbkdf2_sha256.using(rounds=1000).hash("x"), "PASSLIB-PBKDF2-SHA256", "slow"),
        (passlib_hash.pbkdf2_sha256.using(rounds=999).hash("x"), "PASSLIB-PBKDF2-SHA256", "salted"),
        ("{PBKDF2}$1$salt$999$" + "0" * 40, "PBKDF2", HashStrength.SALTED),
        ("{PBKDF2}$1$salt$5000$" + "0" * 40, "PBKDF2", HashStrength.SLOW),
    ],
)
def test_classify(stored: str, scheme: str, strength: str) -> None:
    assert classify(stored) == (scheme, strength)


def test_classify_refuses_unusable_hashes() -> None:
    for bad in ("{NOSUCH}x", "{SSHA}%%%", "plain text", ""):
        with pytest.raises(PasswordError):
            classify(bad)


def test_cleartext_of() -> None:
    assert cleartext_of("{PLAIN}legacy secret") == "legacy secret"
    assert cleartext_of("{CLEAR.hex}" + b"hex pw".hex()) == "hex pw"
    assert cleartext_of(HASHER.hash("x", "SSHA")) is None


SSHA = HASHER.hash("x", "SSHA")
SLOW = HASHER.hash("x")
# (stored, role, allow_weak_imports, allowed)
IMPORT_MATRIX = [
    (SLOW, Role.DOMAIN_ADMIN, False, True),
    (SLOW, Role.ADMIN, False, True),
    (SSHA, Role.DOMAIN_ADMIN, False, False),
    (SSHA, Role.ADMIN, False, True),
    (SSHA, Role.DOMAIN_ADMIN, True, False),
    (MD5, Role.ADMIN, False, False),
    (MD5, Role.DOMAIN_ADMIN, False, False),
    (MD5, Role.ADMIN, True, True),
    (MD5, Role.DOMAIN_ADMIN, True, False),
    ("{PLAIN}legacy-pw", Role.ADMIN, False, False),
    ("{PLAIN}legacy-pw", Role.ADMIN, True, True),
    ("{PLAIN}legacy-pw", Role.DOMAIN_ADMIN, True, False),
    ("{PBKDF2}$1$salt$10$" + "0" * 40, Role.ADMIN, False, True),
    ("{PBKDF2}$1$salt$10$" + "0" * 40, Role.DOMAIN_ADMIN, False, False),
]


@pytest.mark.parametrize(("stored", "role", "weak", "allowed"), IMPORT_MATRIX)
def test_import_matrix(stored: str, role: Role, weak: bool, allowed: bool) -> None:
    policy = PasswordPolicy.from_settings(
        Settings(passwords=PasswordSettings(allow_weak_imports=weak))
    )
    if allowed:
        policy.check_import(stored, role)
        return
    with pytest.raises(PolicyViolation) as caught:
        policy.check_import(stored, role)
    assert caught.value.rule == "hash_scheme"
    assert stored.partition("}")[2][:8] not in str(caught.value)


def test_domain_admin_list_admits_only_slow_hashes() -> None:
    # even when an operator allow-lists PBKDF2 for domain admins, too few iterations are refused
    settings = Settings(
        passwords=PasswordSettings(import_schemes_domain_admin=("pbkdf2", "SHA512-CRYPT"))
    )
    policy = PasswordPolicy.from_settings(settings)
    policy.check_import("{PBKDF2}$1$salt$5000$" + "0" * 40, Role.DOMAIN_ADMIN)
    with pytest.raises(PolicyViolation, match="1000"):
        policy.check_import("{PBKDF2}$1$salt$10$" + "0" * 40, Role.DOMAIN_ADMIN)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("import_schemes_admin", ("SSHA", "LDAP-MD5"), "unsalted"),
        ("import_schemes_admin", ("PLAIN",), "cleartext"),
        ("import_schemes_domain_admin", ("SHA",), "unsalted"),
        ("import_schemes_domain_admin", ("NO-SUCH",), "unknown"),
        ("import_schemes_admin", ("MD5",), "unknown"),  # an alias, not a canonical name
    ],
)
def test_weak_or_unknown_allow_listed_schemes_are_config_errors(
    field: str, value: tuple[str, ...], message: str
) -> None:
    settings = Settings(passwords=PasswordSettings(**{field: value}))
    with pytest.raises(ConfigError, match=message):
        PasswordPolicy.from_settings(settings)


def test_length_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="min_length"):
        PasswordSettings(min_length=100, max_length=64)
    with pytest.raises(ValueError, match="min_length"):
        PasswordSettings(min_length=7)
    with pytest.raises(ValueError, match="max_length"):
        PasswordSettings(max_length=63)


def test_custom_blocklist_file(tmp_path: Path) -> None:
    plain = tmp_path / "list.txt"
    plain.write_text("Our Company 2024\n\n  \nwinter is coming\n", encoding="utf-8")
    packed = tmp_path / "list.txt.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for path in (plain, packed):
        policy = PasswordPolicy.from_settings(
            Settings(passwords=PasswordSettings(blocklist_file=path))
        )
        policy.load()
        assert _rule("our company 2024", policy) == "blocklist"
        assert _rule("WINTER IS COMING", policy) == "blocklist"
        assert _rule("password1234", policy) is None  # replaces the shipped list
    assert Blocklist(plain).load() == 2


def test_missing_blocklist_is_a_config_error(tmp_path: Path) -> None:
    policy = PasswordPolicy.from_settings(
        Settings(passwords=PasswordSettings(blocklist_file=tmp_path / "absent"))
    )
    with pytest.raises(ConfigError, match="blocklist"):
        policy.load()


def test_shipped_blocklist_size() -> None:
    assert Blocklist().load() == 30_000
    assert "123456" in Blocklist()
    assert 123456 not in Blocklist()


@given(st.text(min_size=12, max_size=200))
def test_accepted_passwords_are_usable(password: str) -> None:
    """Whatever the policy accepts has no control character, is within the limits, and encodes
    to UTF-8 within the auth core's byte limit (so it can log in)."""
    if _rule(password) is not None:
        return
    assert 12 <= len(password) <= 1024
    assert len(password.encode("utf-8")) <= 1024
    assert not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in password)


@given(st.text(max_size=60))
def test_policy_never_raises_anything_but_a_violation(password: str) -> None:
    rules = {None, "min_length", "max_length", "control_characters", "context", "blocklist"}
    assert _rule(password, context=("a@b.org", "a")) in rules
