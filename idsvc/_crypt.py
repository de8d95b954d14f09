"""Thread-safe binding to the system libxcrypt (``libcrypt.so.1``) via ctypes.

What it does: ``crypt(phrase, setting)`` computes a crypt(3) string with the re-entrant
``crypt_rn`` (a fresh ``struct crypt_data`` per call, so concurrent calls share no state and the
GIL is released while the C code runs); ``gensalt(prefix, count)`` makes a new setting string with
``crypt_gensalt_rn`` and the kernel's random bytes. Hashes are whatever the library supports
(on Debian: ``$1$ $5$ $6$ $2a$ $2b$ $2y$``, DES and more).

What it does not: parse or validate hash formats (``idsvc.passwords`` does that), compare hashes,
or fall back to Python's deprecated ``crypt`` module.

How it fails: :class:`CryptError` when the library cannot be loaded, the phrase or setting is too
long or contains NUL, or the library rejects the setting (it then returns NULL or a ``*`` string).
Messages never contain the phrase.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

__all__ = ["MAX_PHRASE", "CryptError", "crypt", "gensalt"]

# struct crypt_data in libxcrypt's <crypt.h> is 32768 bytes; crypt_rn refuses smaller buffers.
_CRYPT_DATA_SIZE = 32768
# CRYPT_MAX_PASSPHRASE_SIZE: longer phrases are rejected by the library with ERANGE.
MAX_PHRASE = 512
_OUTPUT_SIZE = 384  # CRYPT_OUTPUT_SIZE / CRYPT_GENSALT_OUTPUT_SIZE


class CryptError(Exception):
    """libxcrypt is unavailable or refused the input."""


class _Lib:
    """The loaded library and its two typed entry points (loaded once, on first use)."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("crypt") or "libcrypt.so.1"
        try:
            lib = ctypes.CDLL(name)
            crypt_rn = lib.crypt_rn
            gensalt_rn = lib.crypt_gensalt_rn
        except (OSError, AttributeError) as exc:
            raise CryptError(f"cannot load libxcrypt ({name}): {exc}") from exc
        crypt_rn.restype = ctypes.c_void_p
        crypt_rn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
        gensalt_rn.restype = ctypes.c_void_p
        gensalt_rn.argtypes = [
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_int,
        ]
        self.crypt_rn = crypt_rn
        self.gensalt_rn = gensalt_rn


_lib: _Lib | None = None
_lib_lock = threading.Lock()


def _get() -> _Lib:
    global _lib
    if _lib is None:
        with _lib_lock:
            if _lib is None:
                _lib = _Lib()
    return _lib


def crypt(phrase: bytes, setting: bytes) -> bytes:
    """The crypt(3) string of ``phrase`` under ``setting`` (a full stored hash works as setting)."""
    if b"\0" in phrase or b"\0" in setting:
        raise CryptError("NUL byte in crypt input")
    if len(phrase) >= MAX_PHRASE:
        raise CryptError(f"phrase longer than {MAX_PHRASE - 1} bytes")
    if len(setting) >= _OUTPUT_SIZE:
        raise CryptError("crypt setting too long")
    lib = _get()
    data = ctypes.create_string_buffer(_CRYPT_DATA_SIZE)
    result = lib.crypt_rn(phrase, setting, data, _CRYPT_DATA_SIZE)
    if not result:
        raise CryptError("libxcrypt rejected the setting")
    out = ctypes.string_at(result)
    if not out or out.startswith(b"*"):
        raise CryptError("libxcrypt rejected the setting")
    return out


def gensalt(prefix: bytes, count: int) -> bytes:
    """A new setting for ``prefix`` (``b"$6$"``, ``b"$2y$"`` …), cost ``count`` (0 = default)."""
    lib = _get()
    out = ctypes.create_string_buffer(_OUTPUT_SIZE)
    result = lib.gensalt_rn(prefix, count, None, 0, out, _OUTPUT_SIZE)
    if not result:
        raise CryptError(f"libxcrypt cannot make a {prefix.decode('ascii', 'replace')} setting")
    return ctypes.string_at(result)
