"""The password policy: what a new password and an imported hash must satisfy.

What it does: :meth:`PasswordPolicy.check_password` refuses a new password that is too short or
too long (Unicode code points, ``passwords.min_length``/``max_length``; and at most
``auth.max_password_length`` UTF-8 bytes, so every settable password can log in, and no more than
the configured scheme can hash: 72 for BLF-CRYPT, 511 for SHA-crypt), that contains
a control character (Unicode Cc — LF, CR, TAB, NUL, DEL, C1 —, a surrogate, or a line/paragraph
separator), that equals the account's address or local part, or that is on the blocklist of
common passwords (case-insensitive). :meth:`PasswordPolicy.check_import` refuses a hash whose
scheme is not on the importing role's allow-list (``passwords.import_schemes_admin`` /
``import_schemes_domain_admin``); unsalted and cleartext schemes are refused to every role unless
``passwords.allow_weak_imports`` is on, and then only for a global admin.

What it does not: hash (``idsvc.passwords``), normalise (the auth core compares the password as
typed, so a normalised form could not log in), or decide who the caller is (the ingress passes a
:class:`Role`). ``idsvc.provisioning`` applies it, so REST, SCIM and the CLI share one policy.

How it fails: :class:`PolicyViolation` (an ``InvalidInput``) whose message names the rule and
never the password; the API answers it as 422 ``password-policy``, SCIM as 400 ``invalidValue``,
the CLI with exit status 2. A blocklist that cannot be read raises ``ConfigError`` at the first
use (start-up loads it eagerly through :meth:`PasswordPolicy.load`).

The shipped blocklist (``idsvc/data/common-passwords.txt.gz``) holds the 30,000 most common
passwords of the Xato 10M corpus as ranked by zxcvbn's frequency list (MIT licence), lower-cased;
it is held as a sorted array of 64-bit keyed digests (~240 KiB) and searched with bisect.
"""

from __future__ import annotations

import bisect
import gzip
import hashlib
import threading
import unicodedata
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path

from idsvc.config import Settings
from idsvc.errors import ConfigError, InvalidInput
from idsvc.passwords import (
    CANONICAL_SCHEMES,
    MIN_SLOW_ITERATIONS,
    HashStrength,
    classify,
    max_password_bytes,
)

SHIPPED_BLOCKLIST = "common-passwords.txt.gz"
MAX_BLOCKLIST_ENTRIES = 10_000_000
_WEAK = frozenset({HashStrength.UNSALTED, HashStrength.CLEARTEXT})
_BAD_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_DIGEST_KEY = b"idsvc-blocklist"  # not a secret: only keeps entries fixed-size and compact


class Role(StrEnum):
    """Who imports a hash: a global admin (admin token, local CLI) or a domain admin."""

    ADMIN = "admin"
    DOMAIN_ADMIN = "domain_admin"


class PolicyViolation(InvalidInput):
    """A new password or an imported hash breaks the policy; ``rule`` names which rule."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"password policy ({rule}): {message}")
        self.rule = rule


def _key(text: str) -> int:
    digest = hashlib.blake2b(text.lower().encode("utf-8", "surrogatepass"), digest_size=8)
    digest.update(_DIGEST_KEY)
    return int.from_bytes(digest.digest(), "big")


class Blocklist:
    """A set of common passwords, compared case-insensitively; loaded on first use."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._keys: array[int] | None = None
        self._lock = threading.Lock()

    def _read(self) -> bytes:
        try:
            if self._path is None:
                raw = resources.files("idsvc.data").joinpath(SHIPPED_BLOCKLIST).read_bytes()
            else:
                raw = self._path.read_bytes()
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            where = self._path or SHIPPED_BLOCKLIST
            raise ConfigError(f"cannot read the password blocklist {where}: {exc}") from None
        return raw

    def load(self) -> int:
        """Load the list now (idempotent); returns the number of distinct entries."""
        with self._lock:
            if self._keys is None:
                lines = self._read().decode("utf-8", "replace").splitlines()
                if len(lines) > MAX_BLOCKLIST_ENTRIES:
                    raise ConfigError(
                        f"password blocklist has more than {MAX_BLOCKLIST_ENTRIES} lines"
                    )
                keys = sorted({_key(line) for line in lines if line.strip()})
                self._keys = array("Q", keys)
            return len(self._keys)

    def __contains__(self, password: object) -> bool:
        if not isinstance(password, str):
            return False
        if self._keys is None:
            self.load()
        assert self._keys is not None
        key = _key(password)
        at = bisect.bisect_left(self._keys, key)
        return at < len(self._keys) and self._keys[at] == key


@dataclass(frozen=True)
class PasswordPolicy:
    """The rules; build one from settings with :meth:`from_settings`."""

    min_length: int = 12
    max_length: int = 1024
    max_bytes: int = 1024
    blocklist: Blocklist | None = field(default_factory=Blocklist)
    import_schemes: Mapping[Role, frozenset[str]] = field(default_factory=dict)
    allow_weak_imports: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> PasswordPolicy:
        """The policy of ``settings``; ConfigError for an unknown or weak allow-listed scheme."""
        pw = settings.passwords
        schemes: dict[Role, frozenset[str]] = {}
        for role, names in (
            (Role.ADMIN, pw.import_schemes_admin),
            (Role.DOMAIN_ADMIN, pw.import_schemes_domain_admin),
        ):
            for name in names:
                strength = CANONICAL_SCHEMES.get(name)
                if strength is None:
                    known = ", ".join(sorted(CANONICAL_SCHEMES))
                    raise ConfigError(f"passwords.import_schemes_{role}: unknown {name}; {known}")
                if strength in _WEAK:
                    raise ConfigError(
                        f"passwords.import_schemes_{role}: {name} is {strength}; only "
                        "passwords.allow_weak_imports (global admins) can allow such imports"
                    )
            schemes[role] = frozenset(names)
        return cls(
            min_length=pw.min_length,
            max_length=pw.max_length,
            max_bytes=min(
                settings.auth.max_password_length,
                max_password_bytes(pw.scheme) or settings.auth.max_password_length,
            ),
            blocklist=Blocklist(pw.blocklist_file) if pw.blocklist else None,
            import_schemes=schemes,
            allow_weak_imports=pw.allow_weak_imports,
        )

    def load(self) -> None:
        """Read the blocklist now, so a missing file fails at start-up and not on a request."""
        if self.blocklist is not None:
            self.blocklist.load()

    def describe(self) -> str:
        """The rules in one sentence (CLI help, error hints)."""
        return f"{self.min_length} to {self.max_length} characters, no control characters" + (
            ", not a common password" if self.blocklist is not None else ""
        )

    def check_password(self, password: str, *, context: tuple[str, ...] = ()) -> None:
        """Raise :class:`PolicyViolation` unless ``password`` may be set. ``context``: words
        the password must not be (the address, its local part)."""
        length = len(password)
        if length < self.min_length:
            raise PolicyViolation(
                "min_length", f"a password needs at least {self.min_length} characters"
            )
        if length > self.max_length:
            raise PolicyViolation(
                "max_length", f"a password has at most {self.max_length} characters"
            )
        if not password.isprintable() and any(
            unicodedata.category(ch) in _BAD_CATEGORIES for ch in password
        ):
            raise PolicyViolation(
                "control_characters",
                "a password must not contain control characters (line feed, tab, NUL …)",
            )
        if 4 * length > self.max_bytes and len(password.encode("utf-8")) > self.max_bytes:
            raise PolicyViolation(
                "max_length", f"a password has at most {self.max_bytes} bytes in UTF-8"
            )
        folded = password.casefold()
        if any(word and folded == word.casefold() for word in context):
            raise PolicyViolation("context", "a password must not be the account's address")
        if self.blocklist is not None and password in self.blocklist:
            raise PolicyViolation("blocklist", "this password is on the list of common passwords")

    def check_import(self, stored: str, role: Role) -> tuple[str, HashStrength]:
        """The scheme and strength of an importable ``stored``; PasswordError when it is
        unusable, :class:`PolicyViolation` when ``role`` may not import it."""
        scheme, strength = classify(stored)
        if strength in _WEAK:
            if self.allow_weak_imports and role is Role.ADMIN:
                return scheme, strength
            raise PolicyViolation(
                "hash_scheme",
                f"{scheme} hashes are {strength} and are not imported"
                + (
                    " (passwords.allow_weak_imports lets a global admin migrate them)"
                    if role is Role.ADMIN
                    else ""
                ),
            )
        allowed = self.import_schemes.get(role, frozenset())
        too_fast = role is Role.DOMAIN_ADMIN and strength is not HashStrength.SLOW
        if scheme not in allowed or too_fast:
            who = "a global admin" if role is Role.ADMIN else "a domain admin"
            slow = f" ({strength}: {MIN_SLOW_ITERATIONS}+ iterations needed)"
            why = slow if too_fast and scheme in allowed else ""
            raise PolicyViolation(
                "hash_scheme",
                f"{who} may not import this {scheme} hash{why}; "
                f"allowed: {', '.join(sorted(allowed)) or 'none'}",
            )
        return scheme, strength
