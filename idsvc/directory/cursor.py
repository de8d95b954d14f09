"""Opaque listing cursors, one format for every backend: base64url of ``v1:<kind>:<key>``.

What it does: ``encode_cursor`` turns the last key of a page into a cursor; ``decode_cursor``
gives that key back (``None`` for no cursor: the first page). ``kind`` names the listing, so a
cursor of one listing is refused by another.

What it does not: check the key's syntax (a backend only compares it with its own keys) or keep
any state; a cursor stays valid as long as the key order does.

How it fails: ``InvalidInput`` for anything that is not a cursor this module made for ``kind``:
too long (more than ``MAX_CURSOR`` characters), not base64url, not UTF-8, another kind, a NUL, or
any other spelling of a real cursor. The message never echoes the text.
"""

from __future__ import annotations

import base64
import binascii

from idsvc.errors import InvalidInput

MAX_CURSOR = 1400  # characters; far above a 254-octet key with its tag


def encode_cursor(kind: str, key: str) -> str:
    raw = f"v1:{kind}:{key}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(kind: str, cursor: str | None) -> str | None:
    """The key a cursor of listing ``kind`` resumes after, None for None; else InvalidInput."""
    if cursor is None:
        return None
    if not isinstance(cursor, str) or not cursor or len(cursor) > MAX_CURSOR:
        raise InvalidInput("invalid cursor")
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput("invalid cursor") from exc
    tag = f"v1:{kind}:"
    key = text[len(tag) :]
    if not text.startswith(tag) or "\x00" in text or encode_cursor(kind, key) != cursor:
        raise InvalidInput("invalid cursor (not from this listing)")
    return key
