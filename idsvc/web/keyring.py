"""The key file that seals the web's second-factor secrets (AES-256-GCM), kept apart from the
database so a copy of the database (a backup, a stolen disk image of ``/var/lib/idsvc``) holds no
usable TOTP secret.

File format: text, one key per line, ``<id> <base64 of 32 random bytes>``; blank lines and lines
starting with ``#`` are ignored. The **first** key seals everything new; the others are only
read, so a rotation is: put a new line at the top, restart (``SecondFactors`` re-seals every row
under the new key when it opens), then delete the old line. The file is created on first use
with mode 0600 (its directory 0700 when created); a file readable by group or others is refused,
like ssh refuses a private key.

``seal``/``open`` take *associated data* (the owner of the secret): a sealed value copied to
another owner does not open (``SealError``), nor does a modified one.

How it fails: a missing key file where sealed data exists, a bad line or a lax mode raise
``SealError``; the caller fails closed.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
_ID = re.compile(r"[A-Za-z0-9_.-]{1,32}")


class SealError(Exception):
    """A sealed value that does not open, or a key file that cannot be used."""


class KeyRing:
    """The keys of one key file; ``current`` seals, every key opens its own values."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise SealError("the key file holds no key")
        self.current = keys[0][0]
        self._aead = {kid: AESGCM(key) for kid, key in keys}

    @classmethod
    def parse(cls, text: str, where: str = "key file") -> KeyRing:
        keys: list[tuple[str, bytes]] = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            kid, _, encoded = line.partition(" ")
            try:
                key = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if not _ID.fullmatch(kid) or len(key) != KEY_BYTES:
                raise SealError(f"{where} line {number}: expected '<id> <base64 of 32 bytes>'")
            if any(kid == k for k, _ in keys):
                raise SealError(f"{where} line {number}: key id {kid!r} used twice")
            keys.append((kid, key))
        return cls(keys)

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise SealError(f"cannot open the key file {path}: {exc.strerror}") from exc
        with os.fdopen(fd, "r", encoding="ascii", errors="replace") as f:
            if stat.S_IMODE(os.fstat(f.fileno()).st_mode) & 0o077:
                raise SealError(f"the key file {path} is readable by others: chmod 600 it")
            return cls.parse(f.read(), str(path))

    @classmethod
    def create(cls, path: Path) -> KeyRing:
        """A new key file with one random key (never overwrites one that exists)."""
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True)
        line = f"k1 {base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}\n"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write("# idsvc web second-factor key (docs/web.md); first line seals\n" + line)
            f.flush()
            os.fsync(f.fileno())
        return cls.load(path)

    def seal(self, plain: bytes, owner: bytes) -> tuple[str, bytes, bytes]:
        """``(key id, nonce, ciphertext+tag)`` of ``plain`` bound to ``owner``."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return self.current, nonce, self._aead[self.current].encrypt(nonce, plain, owner)

    def open(self, kid: str, nonce: bytes, sealed: bytes, owner: bytes) -> bytes:
        aead = self._aead.get(kid)
        if aead is None:
            raise SealError(f"sealed under key {kid!r}, which the key file no longer holds")
        try:
            return aead.decrypt(nonce, sealed, owner)
        except (InvalidTag, ValueError) as exc:
            raise SealError("sealed value does not open for this owner (changed or moved)") from exc
