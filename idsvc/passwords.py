"""Password schemes: identify, verify, hash and judge stored ``{SCHEME}`` hashes (Dovecot rules).

What it does: parses every stored form listed in protocols.md §8.8 — ``{SCHEME[.b64|.hex]}data``
with Dovecot's scheme names (case-insensitive), and unprefixed crypt strings recognised by content
(``$1$ $5$ $6$ $2a$ $2b$ $2y$ $argon2i$ $argon2id$`` and passlib's ``$pbkdf2…$ $bcrypt-sha256$``);
verifies a password against them in constant time; makes new hashes (ARGON2ID, ARGON2I,
BLF-CRYPT, SHA512-CRYPT, SHA256-CRYPT, SSHA512, SSHA256, SSHA); says whether a hash is weaker than
the configured scheme and parameters. This is the only module that imports hashing libraries:
argon2-cffi, libxcrypt (through :mod:`idsvc._crypt`, for every crypt(3) string) and libpass
(``passlib``, only for its ``$pbkdf2-sha256$``-style formats); digests use :mod:`hashlib`.

What it does not: choose a policy (callers decide whether a weak import is allowed, using
``STRONG_SCHEMES``), touch a directory, or run anything asynchronously — every call blocks for the
cost of the scheme (``is_cheap`` tells the auth engine which ones may run inline).

How it fails: an unknown scheme or encoding, a corrupt or truncated hash, or parameters beyond the
limits below (a stored hash must not be able to make one login cost minutes or gigabytes) raise
:class:`~idsvc.errors.PasswordError`; the message names the scheme and the defect, never the
password and never the stored data. A wrong password is ``False``, never an exception. Bad
settings raise :class:`~idsvc.errors.ConfigError` from ``PasswordHasher()``.

Content wins over labels, as in Dovecot: ``{CRYPT}``/``{*-CRYPT}`` values are classified by their
``$id$``, ``{MD5}`` is MD5-CRYPT when it starts with ``$1$`` and base64 MD5 (OpenLDAP's meaning)
otherwise, ``{ARGON2}`` by its ``$argon2…$`` variant.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import argon2
import argon2.exceptions
import argon2.low_level
from passlib import hash as passlib_hash

from idsvc import _crypt
from idsvc.config import PasswordSettings
from idsvc.errors import ConfigError, PasswordError

__all__ = [
    "CANONICAL_SCHEMES",
    "HASH_SCHEMES",
    "SCHEMES",
    "STRONG_SCHEMES",
    "HashStrength",
    "PasswordHasher",
    "classify",
    "identify",
    "max_password_bytes",
    "validate_hash",
]

# Limits on what a stored value may ask of us (every parser is bounded).
MAX_STORED_LENGTH = 16384
MAX_SHA_CRYPT_ROUNDS = 1_000_000
MAX_BCRYPT_COST = 18
MAX_ARGON2_MEMORY_KIB = 1_048_576
MAX_ARGON2_TIME = 64
MAX_ARGON2_PARALLELISM = 16
MAX_PBKDF2_ROUNDS = 2_000_000
BCRYPT_MAX_BYTES = 72  # bcrypt only ever reads this many bytes of the password


@dataclass(frozen=True, slots=True)
class _Digest:
    algo: str  # hashlib name
    size: int  # digest bytes
    salted: bool  # salt = every byte after the digest
    hex_default: bool  # PLAIN-MD5 is hex by default, the others base64


_DIGESTS: dict[str, _Digest] = {
    "PLAIN-MD5": _Digest("md5", 16, False, True),
    "LDAP-MD5": _Digest("md5", 16, False, False),
    "SMD5": _Digest("md5", 16, True, False),
    "SHA": _Digest("sha1", 20, False, False),
    "SSHA": _Digest("sha1", 20, True, False),
    "SHA256": _Digest("sha256", 32, False, False),
    "SSHA256": _Digest("sha256", 32, True, False),
    "SHA512": _Digest("sha512", 64, False, False),
    "SSHA512": _Digest("sha512", 64, True, False),
}
_CRYPT_NAMES = ("CRYPT", "DES-CRYPT", "MD5-CRYPT", "SHA256-CRYPT", "SHA512-CRYPT", "BLF-CRYPT")
_ARGON2_NAMES = ("ARGON2", "ARGON2I", "ARGON2ID")
_SCRAM: dict[str, tuple[str, int]] = {"SCRAM-SHA-1": ("sha1", 20), "SCRAM-SHA-256": ("sha256", 32)}
# passlib/libpass formats accepted unprefixed on import: (marker, our name, handler, max rounds)
_PASSLIB: tuple[tuple[str, str, Any, int], ...] = (
    ("$pbkdf2$", "PASSLIB-PBKDF2-SHA1", passlib_hash.pbkdf2_sha1, MAX_PBKDF2_ROUNDS),
    ("$pbkdf2-sha256$", "PASSLIB-PBKDF2-SHA256", passlib_hash.pbkdf2_sha256, MAX_PBKDF2_ROUNDS),
    ("$pbkdf2-sha512$", "PASSLIB-PBKDF2-SHA512", passlib_hash.pbkdf2_sha512, MAX_PBKDF2_ROUNDS),
    ("$bcrypt-sha256$", "PASSLIB-BCRYPT-SHA256", passlib_hash.bcrypt_sha256, MAX_BCRYPT_COST),
)
_PLAIN_ALIASES = ("PLAIN", "CLEAR", "CLEARTEXT")

SCHEMES: tuple[str, ...] = (
    *_PLAIN_ALIASES,
    *_DIGESTS,
    "SHA1",
    "MD5",
    *_CRYPT_NAMES,
    *_ARGON2_NAMES,
    "PBKDF2",
    *_SCRAM,
    *(name for _, name, _, _ in _PASSLIB),
)
STRONG_SCHEMES: frozenset[str] = frozenset(
    {"ARGON2ID", "ARGON2I", "BLF-CRYPT", "SHA512-CRYPT", "SHA256-CRYPT"}
    | {name for _, name, _, _ in _PASSLIB if name != "PASSLIB-PBKDF2-SHA1"}
)
HASH_SCHEMES: tuple[str, ...] = (
    "ARGON2ID",
    "ARGON2I",
    "BLF-CRYPT",
    "SHA512-CRYPT",
    "SHA256-CRYPT",
    "SSHA512",
    "SSHA256",
    "SSHA",
)
# µs-cost schemes: a single digest (or DES's 25 rounds); the auth engine may run them inline
_CHEAP = frozenset({"PLAIN", "DES-CRYPT", *_DIGESTS})

_PREFIX_RE = re.compile(r"\{([A-Za-z0-9-]{1,32})(?:\.([A-Za-z0-9]{1,8}))?\}")
_C64 = r"[./0-9A-Za-z]"
_SHA_SALT = r"(?:(?![$:;*!\\])[\x21-\x7e]){0,16}"  # printable ASCII, none of $:;*!\
_CRYPT_FORMS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("MD5-CRYPT", re.compile(rf"\$1\${_C64}{{0,8}}\${_C64}{{22}}")),
    ("SHA256-CRYPT", re.compile(rf"\$5\$(?:rounds=([0-9]{{1,9}})\$)?{_SHA_SALT}\${_C64}{{43}}")),
    ("SHA512-CRYPT", re.compile(rf"\$6\$(?:rounds=([0-9]{{1,9}})\$)?{_SHA_SALT}\${_C64}{{86}}")),
    ("BLF-CRYPT", re.compile(rf"\$2[aby]\$([0-9]{{2}})\${_C64}{{53}}")),
    ("DES-CRYPT", re.compile(rf"{_C64}{{13}}")),
)
_ARGON2_RE = re.compile(
    r"\$argon2(id|i)\$(?:v=(?:16|19)\$)?m=[0-9]{1,8},t=[0-9]{1,4},p=[0-9]{1,3}\$[^$]+\$[^$]+"
)
_PBKDF2_RE = re.compile(r"\$1\$([^$]{1,64})\$([0-9]{1,9})\$([0-9a-fA-F]{40})")
_SCRAM_RE = re.compile(r"([0-9]{1,9}),([A-Za-z0-9+/=]{1,200}),([A-Za-z0-9+/=]+),([A-Za-z0-9+/=]+)")
_B64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
# hashlib's named constructors: ``hashlib.new(name)`` goes through a Python wrapper per call
_HASHLIB: dict[str, Callable[[bytes], Any]] = {
    "md5": hashlib.md5,
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}
# The hot path parses a stored hash once: its cheap-verify form is kept here, keyed by the
# stored string itself (an entry is only ever found under the exact value that produced it, so
# a password change is a different key). Bounded; the oldest entries go first.
PARSED_CACHE_SIZE = 32768
_HEX_RE = re.compile(r"(?:[0-9a-fA-F]{2})*")


@dataclass(frozen=True, slots=True)
class _Parsed:
    """A stored hash taken apart: canonical scheme, and raw bytes (digest schemes, PLAIN) or the
    ASCII string the verifier consumes (crypt, Argon2, PBKDF2, SCRAM, passlib)."""

    scheme: str
    raw: bytes


def _bad(scheme: str, defect: str) -> PasswordError:
    return PasswordError(f"unusable {scheme} password hash: {defect}")


# a stored hash's cheap-verify form: (digest constructor, digest size, digest+salt) for the
# digest schemes, (None, 0, b"") for the other cheap ones (verified by ``_verify``), None when slow
_CheapForm = tuple[Callable[[bytes], Any] | None, int, bytes, _Parsed] | None


def _cheap_form(parsed: _Parsed) -> _CheapForm:
    if parsed.scheme not in _CHEAP:
        return None
    spec = _DIGESTS.get(parsed.scheme)
    if spec is None:
        return (None, 0, b"", parsed)
    return (_HASHLIB[spec.algo], spec.size, parsed.raw, parsed)


class _ParsedCache:
    """Stored hash -> ``_CheapForm``, at most ``size`` entries (FIFO). Reads take no lock (a
    dict lookup is atomic); inserts and evictions do, as hashing threads may share it."""

    __slots__ = ("_forms", "_lock", "_size")

    def __init__(self, size: int) -> None:
        self._forms: dict[str, _CheapForm] = {}
        self._lock = threading.Lock()
        self._size = size

    def get(self, stored: str) -> _CheapForm:
        try:
            return self._forms[stored]
        except KeyError:
            pass
        form = _cheap_form(_parse(stored))  # PasswordError for an unusable value: not kept
        with self._lock:
            forms = self._forms
            if len(forms) >= self._size:
                del forms[next(iter(forms))]
            forms[stored] = form
        return form

    def __len__(self) -> int:
        return len(self._forms)


def _b64decode(data: str | bytes, scheme: str) -> bytes:
    text = data.decode("ascii", "replace") if isinstance(data, bytes) else data
    if not _B64_RE.fullmatch(text) or len(text) % 4 == 1:
        raise _bad(scheme, "invalid base64")
    try:  # tolerate missing '=' padding, as several writers omit it
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise _bad(scheme, "invalid base64") from None


def _hexdecode(data: str, scheme: str) -> bytes:
    if not _HEX_RE.fullmatch(data):
        raise _bad(scheme, "invalid hex")
    return bytes.fromhex(data)


def _decode_enc(data: str, enc: str | None, scheme: str) -> str:
    """Undo an explicit ``.b64``/``.hex`` on a text scheme (crypt string, cleartext …)."""
    if enc is None:
        return data
    raw = _hexdecode(data, scheme) if enc == "hex" else _b64decode(data, scheme)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(scheme, f"{enc}-decoded value is not UTF-8") from None


def _parse_crypt(text: str, label: str) -> _Parsed:
    for scheme, form in _CRYPT_FORMS:
        m = form.fullmatch(text)
        if m is None:
            continue
        if scheme in ("SHA256-CRYPT", "SHA512-CRYPT") and m.group(1) is not None:
            rounds = int(m.group(1))
            if not 1000 <= rounds <= MAX_SHA_CRYPT_ROUNDS:
                raise _bad(scheme, f"rounds={rounds} outside 1000..{MAX_SHA_CRYPT_ROUNDS}")
        if scheme == "BLF-CRYPT":
            cost = int(m.group(1))
            if not 4 <= cost <= MAX_BCRYPT_COST:
                raise _bad(scheme, f"cost {cost} outside 4..{MAX_BCRYPT_COST}")
        return _Parsed(scheme, text.encode("ascii"))
    raise _bad(label, "not a crypt string this service can verify")


def _parse_argon2(text: str, label: str) -> _Parsed:
    if not _ARGON2_RE.fullmatch(text):
        raise _bad(label, "not an $argon2i$/$argon2id$ string")
    try:
        params = argon2.extract_parameters(text)
    except argon2.exceptions.InvalidHashError:
        raise _bad(label, "malformed Argon2 string") from None
    if (
        not 8 * params.parallelism <= params.memory_cost <= MAX_ARGON2_MEMORY_KIB
        or not 1 <= params.time_cost <= MAX_ARGON2_TIME
        or not 1 <= params.parallelism <= MAX_ARGON2_PARALLELISM
    ):
        raise _bad(label, "Argon2 parameters invalid or beyond this service's limits")
    salt, digest = text.rsplit("$", 2)[1:]
    if len(_b64decode(salt, label)) < 8 or len(_b64decode(digest, label)) < 12:
        raise _bad(label, "Argon2 salt or hash too short")
    return _Parsed("ARGON2ID" if params.type is argon2.Type.ID else "ARGON2I", text.encode())


def _parse_passlib(text: str) -> _Parsed | None:
    for marker, name, handler, max_rounds in _PASSLIB:
        if not text.startswith(marker):
            continue
        if not text.isascii():
            raise _bad(name, "non-ASCII characters")
        try:
            parsed = handler.from_string(text)
            rounds = int(parsed.rounds)
        except (ValueError, TypeError):
            raise _bad(name, "malformed passlib string") from None
        if not parsed.checksum:  # passlib also parses bare settings without a hash
            raise _bad(name, "malformed passlib string (no hash)")
        if rounds > max_rounds:
            raise _bad(name, f"rounds {rounds} beyond this service's limit {max_rounds}")
        return _Parsed(name, text.encode("ascii"))
    return None


def _parse_digest(scheme: str, data: str, enc: str | None) -> _Parsed:
    spec = _DIGESTS[scheme]
    if enc is None and not spec.salted:
        # Dovecot guesses for fixed-size digests: exactly twice the size is hex, else base64
        enc = "hex" if len(data) == 2 * spec.size else "b64"
    elif enc is None:
        enc = "hex" if spec.hex_default else "b64"
    raw = _hexdecode(data, scheme) if enc == "hex" else _b64decode(data, scheme)
    if spec.salted and len(raw) <= spec.size:
        raise _bad(scheme, f"shorter than {spec.size + 1} bytes (digest + salt)")
    if not spec.salted and len(raw) != spec.size:
        raise _bad(scheme, f"digest is {len(raw)} bytes, expected {spec.size}")
    return _Parsed(scheme, raw)


def _parse_prefixed(name: str, enc: str | None, data: str) -> _Parsed:
    if name in _PLAIN_ALIASES:
        if enc is None:
            raw = data.encode("utf-8", "surrogateescape")
        else:
            raw = _hexdecode(data, "PLAIN") if enc == "hex" else _b64decode(data, "PLAIN")
        if not raw:
            raise _bad("PLAIN", "empty password")
        return _Parsed("PLAIN", raw)
    if name == "SHA1":
        name = "SHA"
    if name == "MD5":  # Dovecot: MD5-CRYPT; OpenLDAP and others: base64 MD5
        text = _decode_enc(data, enc, name)
        return (
            _parse_crypt(text, name)
            if text.startswith("$1$")
            else _parse_digest("LDAP-MD5", data, enc)
        )
    if name in _DIGESTS:
        return _parse_digest(name, data, enc)
    if name in _CRYPT_NAMES:
        return _parse_crypt(_decode_enc(data, enc, name), name)
    if name in _ARGON2_NAMES:
        return _parse_argon2(_decode_enc(data, enc, name), name)
    if name == "PBKDF2":
        text = _decode_enc(data, enc, name)
        m = _PBKDF2_RE.fullmatch(text)
        if m is None:
            raise _bad(name, "expected $1$<salt>$<rounds>$<40 hex digits>")
        if not 1 <= int(m.group(2)) <= MAX_PBKDF2_ROUNDS:
            raise _bad(name, f"rounds outside 1..{MAX_PBKDF2_ROUNDS}")
        return _Parsed(name, text.encode("utf-8"))
    if name in _SCRAM:
        text = _decode_enc(data, enc, name)
        m = _SCRAM_RE.fullmatch(text)
        if m is None:
            raise _bad(name, "expected <iterations>,<salt>,<StoredKey>,<ServerKey>")
        size = _SCRAM[name][1]
        keys_ok = all(len(_b64decode(m.group(i), name)) == size for i in (3, 4))
        if not keys_ok or not _b64decode(m.group(2), name):
            raise _bad(name, "wrong key size or empty salt")
        if not 1 <= int(m.group(1)) <= MAX_PBKDF2_ROUNDS:
            raise _bad(name, f"iterations outside 1..{MAX_PBKDF2_ROUNDS}")
        return _Parsed(name, text.encode("ascii"))
    raise PasswordError(f"unknown password scheme {{{name}}}")


def _parse(stored: str) -> _Parsed:
    if not isinstance(stored, str):
        raise PasswordError("stored password hash must be a string")
    if not stored:
        raise PasswordError("stored password hash is empty")
    if len(stored) > MAX_STORED_LENGTH:
        raise PasswordError(f"stored password hash longer than {MAX_STORED_LENGTH} characters")
    if stored.startswith("{"):
        m = _PREFIX_RE.match(stored)
        if m is None:
            raise PasswordError("malformed {SCHEME} prefix in stored password hash")
        name, enc = m.group(1).upper(), m.group(2)
        if enc is not None:
            enc = {"b64": "b64", "base64": "b64", "hex": "hex"}.get(enc.lower())
            if enc is None:
                raise PasswordError(f"unknown encoding suffix in {{{name}.…}} prefix")
        return _parse_prefixed(name, enc, stored[m.end() :])
    if stored.startswith("$argon2"):
        return _parse_argon2(stored, "ARGON2")
    parsed = _parse_passlib(stored)
    if parsed is not None:
        return parsed
    if stored.startswith("$"):
        return _parse_crypt(stored, "CRYPT")
    # a bare 13-character string could be DES crypt or a plaintext password: never guess
    raise PasswordError("stored password hash has no {SCHEME} prefix and no $id$ crypt form")


def identify(stored: str) -> str:
    """The canonical scheme of ``stored`` (``"SHA512-CRYPT"`` for ``{CRYPT}$6$…``)."""
    return _parse(stored).scheme


def _canonical(parsed: _Parsed) -> str:
    if parsed.scheme == "PLAIN":
        try:
            text = parsed.raw.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        if text and text.isprintable():
            return "{PLAIN}" + text
        return "{PLAIN.b64}" + base64.b64encode(parsed.raw).decode("ascii")
    if parsed.scheme in _DIGESTS:
        if _DIGESTS[parsed.scheme].hex_default:
            return "{" + parsed.scheme + "}" + parsed.raw.hex()
        return "{" + parsed.scheme + "}" + base64.b64encode(parsed.raw).decode("ascii")
    if parsed.scheme.startswith("PASSLIB-"):
        return parsed.raw.decode("ascii")
    return "{" + parsed.scheme + "}" + parsed.raw.decode("utf-8")


class HashStrength(StrEnum):
    """How much a stored hash protects the password if the directory leaks (import policy)."""

    SLOW = "slow"  # salted and deliberately costly: Argon2, bcrypt, SHA-crypt, PBKDF2, SCRAM
    SALTED = "salted"  # salted but fast: one digest (SSHA*, SMD5), MD5-crypt, few iterations
    UNSALTED = "unsalted"  # one unsalted digest, or DES crypt (12-bit salt, 8 bytes used)
    CLEARTEXT = "cleartext"  # {PLAIN}: the password itself


# Every scheme name ``identify`` can return, with its class (iteration counts can lower SLOW)
CANONICAL_SCHEMES: dict[str, HashStrength] = {
    "PLAIN": HashStrength.CLEARTEXT,
    **{
        name: HashStrength.SALTED if spec.salted else HashStrength.UNSALTED
        for name, spec in _DIGESTS.items()
    },
    "DES-CRYPT": HashStrength.UNSALTED,
    "MD5-CRYPT": HashStrength.SALTED,
    "SHA256-CRYPT": HashStrength.SLOW,
    "SHA512-CRYPT": HashStrength.SLOW,
    "BLF-CRYPT": HashStrength.SLOW,
    "ARGON2I": HashStrength.SLOW,
    "ARGON2ID": HashStrength.SLOW,
    "PBKDF2": HashStrength.SLOW,
    **dict.fromkeys(_SCRAM, HashStrength.SLOW),
    **{name: HashStrength.SLOW for _, name, _, _ in _PASSLIB},
}
MIN_SLOW_ITERATIONS = 1000  # PBKDF2/SCRAM/passlib-PBKDF2 below this count as SALTED


def _iterations(parsed: _Parsed) -> int | None:
    text = parsed.raw.decode("ascii", "replace")
    if parsed.scheme == "PBKDF2":
        return int(text.split("$")[3])
    if parsed.scheme in _SCRAM:
        return int(text.split(",", 1)[0])
    if parsed.scheme.startswith("PASSLIB-PBKDF2"):
        return int(text.split("$")[2])
    return None


def classify(stored: str) -> tuple[str, HashStrength]:
    """The canonical scheme of ``stored`` and its :class:`HashStrength` (PasswordError when
    unusable). Iterated schemes with fewer than ``MIN_SLOW_ITERATIONS`` rounds are SALTED."""
    parsed = _parse(stored)
    strength = CANONICAL_SCHEMES[parsed.scheme]
    rounds = _iterations(parsed)
    if strength is HashStrength.SLOW and rounds is not None and rounds < MIN_SLOW_ITERATIONS:
        strength = HashStrength.SALTED
    return parsed.scheme, strength


def max_password_bytes(scheme: str) -> int | None:
    """The longest password (UTF-8 bytes) ``scheme`` can hash, or None when it has no limit."""
    name = scheme.upper()
    if name == "BLF-CRYPT":
        return BCRYPT_MAX_BYTES
    if name.endswith("-CRYPT"):
        return _crypt.MAX_PHRASE - 1
    return None


def cleartext_of(stored: str) -> str | None:
    """The password inside a ``{PLAIN}`` value (so an import can hash it), else None."""
    parsed = _parse(stored)
    if parsed.scheme != "PLAIN":
        return None
    try:
        return parsed.raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("PLAIN", "not UTF-8") from None


def validate_hash(stored: str) -> str:
    """Parse ``stored`` fully (PasswordError when corrupt) and return its canonical form:
    ``{SCHEME}`` named after the content, default encoding, unprefixed passlib strings kept."""
    return _canonical(_parse(stored))


def _check_password(password: str) -> bytes:
    if not isinstance(password, str) or not password:
        raise PasswordError("refusing to hash an empty password")
    if "\0" in password:
        raise PasswordError("refusing to hash a password containing NUL")
    try:
        return password.encode("utf-8")
    except UnicodeEncodeError:
        raise PasswordError("password is not encodable as UTF-8") from None


def _verifiable(password: str) -> bytes | None:
    """``password`` as UTF-8, or None when it can never match (empty, NUL, not encodable)."""
    if not isinstance(password, str) or not password or "\0" in password:
        return None
    try:
        return password.encode("utf-8")
    except UnicodeEncodeError:
        return None


class PasswordHasher:
    """Hashes with the configured scheme, verifies any supported scheme. Thread-safe."""

    def __init__(self, settings: PasswordSettings) -> None:
        scheme = settings.scheme.upper()
        if scheme not in HASH_SCHEMES or scheme not in STRONG_SCHEMES:
            allowed = ", ".join(s for s in HASH_SCHEMES if s in STRONG_SCHEMES)
            raise ConfigError(f"passwords.scheme {settings.scheme!r} is not one of: {allowed}")
        self._settings = settings
        self.scheme = scheme
        self._dummy: str | None = None
        self._dummy_lock = threading.Lock()
        self._parsed = _ParsedCache(PARSED_CACHE_SIZE)
        if scheme.endswith("-CRYPT"):
            try:
                _crypt.gensalt(b"$2y$" if scheme == "BLF-CRYPT" else b"$6$", 0)
            except _crypt.CryptError as exc:
                raise ConfigError(f"passwords.scheme {scheme} needs libxcrypt: {exc}") from None

    # -- hashing ------------------------------------------------------------------------------

    def hash(self, password: str, scheme: str | None = None) -> str:
        """A new ``{SCHEME}…`` hash of ``password`` (configured scheme unless one is given)."""
        name = (scheme or self.scheme).upper()
        if name not in HASH_SCHEMES:
            raise PasswordError(f"cannot make new {name} hashes; use one of {HASH_SCHEMES}")
        pw = _check_password(password)
        s = self._settings
        if name.startswith("ARGON2"):
            encoded = argon2.low_level.hash_secret(
                pw,
                os.urandom(16),
                time_cost=s.argon2_time_cost,
                memory_cost=s.argon2_memory_kib,
                parallelism=s.argon2_parallelism,
                hash_len=32,
                type=argon2.Type.ID if name == "ARGON2ID" else argon2.Type.I,
            )
            return "{" + name + "}" + encoded.decode("ascii")
        if name in _DIGESTS:
            spec = _DIGESTS[name]
            salt = os.urandom(8)
            digest = _HASHLIB[spec.algo](pw + salt).digest()
            return "{" + name + "}" + base64.b64encode(digest + salt).decode("ascii")
        if name == "BLF-CRYPT":
            if len(pw) > BCRYPT_MAX_BYTES:
                raise PasswordError(
                    f"BLF-CRYPT ignores bytes after the {BCRYPT_MAX_BYTES}th; "
                    "this password is longer (use ARGON2ID)"
                )
            prefix, count = b"$2y$", s.bcrypt_cost
        else:
            prefix, count = (b"$6$" if name == "SHA512-CRYPT" else b"$5$"), s.sha_crypt_rounds
        if len(pw) >= _crypt.MAX_PHRASE:
            raise PasswordError(f"{name} accepts at most {_crypt.MAX_PHRASE - 1} bytes")
        try:
            out = _crypt.crypt(pw, _crypt.gensalt(prefix, count))
        except _crypt.CryptError as exc:
            raise PasswordError(f"cannot make a {name} hash: {exc}") from None
        return "{" + name + "}" + out.decode("ascii")

    # -- verifying ----------------------------------------------------------------------------

    def verify(self, password: str, stored: str) -> bool:
        """True iff ``password`` matches ``stored``. Empty or NUL-bearing passwords never match."""
        parsed = _parse(stored)
        pw = _verifiable(password)
        return pw is not None and _verify(parsed, pw)

    def verify_if_cheap(self, password: str, stored: str) -> bool | None:
        """:meth:`verify` for µs-cost schemes; None when it is a slow scheme (the caller
        verifies those off the event loop). An unusable ``stored`` raises PasswordError, as
        ``verify`` does. ``stored`` is parsed once and its parsed form kept (bounded cache), so
        a repeat costs a dict lookup and one digest."""
        form = self._parsed.get(stored)
        if form is None:
            return None
        pw = _verifiable(password)
        if pw is None:
            return False
        new, size, raw, parsed = form
        if new is None:
            return _verify(parsed, pw)
        return hmac.compare_digest(new(pw + raw[size:]).digest(), raw[:size])

    def dummy_verify(self, password: str) -> None:
        """Spend what verifying a configured-scheme hash costs (unknown users look alike)."""
        if self._dummy is None:
            with self._dummy_lock:
                if self._dummy is None:
                    self._dummy = self.hash(secrets.token_urlsafe(18))
        _verify(_parse(self._dummy), _verifiable(password) or b"dummy-password")

    @staticmethod
    def scheme_of(stored: str) -> str:
        """:func:`identify` (the auth engine groups stored hashes by scheme for its dummy
        verify)."""
        return identify(stored)

    def needs_rehash(self, stored: str) -> bool:
        """True when ``stored`` is not the configured scheme, or has weaker parameters."""
        parsed = _parse(stored)
        if parsed.scheme != self.scheme:
            return True
        s = self._settings
        text = parsed.raw.decode("ascii", "replace")
        if parsed.scheme.startswith("ARGON2"):
            p = argon2.extract_parameters(text)
            return p.memory_cost < s.argon2_memory_kib or p.time_cost < s.argon2_time_cost
        if parsed.scheme == "BLF-CRYPT":
            return int(text[4:6]) < s.bcrypt_cost
        if parsed.scheme in ("SHA256-CRYPT", "SHA512-CRYPT"):
            m = re.match(r"\$[56]\$rounds=([0-9]+)\$", text)
            return (int(m.group(1)) if m else 5000) < s.sha_crypt_rounds
        return False  # SSHA*: no parameters (and never the configured scheme: not strong)

    @staticmethod
    def is_cheap(stored: str) -> bool:
        """True for µs-cost schemes (and for unusable values, whose verify fails at once)."""
        try:
            return _parse(stored).scheme in _CHEAP
        except PasswordError:
            return True


def _verify(parsed: _Parsed, pw: bytes) -> bool:
    scheme, raw = parsed.scheme, parsed.raw
    if scheme == "PLAIN":  # compare digests so that the time does not depend on the length
        return hmac.compare_digest(hashlib.sha256(pw).digest(), hashlib.sha256(raw).digest())
    if scheme in _DIGESTS:
        spec = _DIGESTS[scheme]
        salt = raw[spec.size :]
        return hmac.compare_digest(_HASHLIB[spec.algo](pw + salt).digest(), raw[: spec.size])
    if scheme in ("ARGON2ID", "ARGON2I"):
        kind = argon2.Type.ID if scheme == "ARGON2ID" else argon2.Type.I
        try:
            return argon2.low_level.verify_secret(raw, pw, kind)
        except argon2.exceptions.VerifyMismatchError:
            return False
        except argon2.exceptions.VerificationError:
            raise _bad(scheme, "Argon2 library refused the hash") from None
    if scheme == "PBKDF2":
        salt_text, rounds, key = raw.decode("utf-8").split("$")[2:]
        derived = hashlib.pbkdf2_hmac("sha1", pw, salt_text.encode("utf-8"), int(rounds), 20)
        return hmac.compare_digest(derived, bytes.fromhex(key))
    if scheme in _SCRAM:
        algo, _ = _SCRAM[scheme]
        iters, salt_b64, stored_key, _server = raw.decode("ascii").split(",")
        salted = hashlib.pbkdf2_hmac(algo, pw, _b64decode(salt_b64, scheme), int(iters))
        client_key = hmac.new(salted, b"Client Key", algo).digest()
        computed = hashlib.new(algo, client_key).digest()
        return hmac.compare_digest(computed, _b64decode(stored_key, scheme))
    if scheme.startswith("PASSLIB-"):
        handler = next(h for _, name, h, _ in _PASSLIB if name == scheme)
        try:
            return bool(handler.verify(pw, raw.decode("ascii")))
        except (ValueError, TypeError):
            raise _bad(scheme, "passlib refused the hash") from None
    # crypt(3) strings: libxcrypt recomputes with the stored value as setting
    if scheme == "BLF-CRYPT":
        pw = pw[:BCRYPT_MAX_BYTES]
    if len(pw) >= _crypt.MAX_PHRASE:
        return False  # libxcrypt never hashed such a phrase
    try:
        return hmac.compare_digest(_crypt.crypt(pw, raw), raw)
    except _crypt.CryptError as exc:
        raise _bad(scheme, str(exc)) from None
