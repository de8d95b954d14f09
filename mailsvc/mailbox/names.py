"""Folder names: IMAP's modified UTF-7 (RFC 3501 §5.1.3) and the confinement rule that maps a
folder name onto one Maildir++ directory under the user's Maildir.

Hierarchy delimiter ``.`` (the Maildir++ layout, as Dovecot's default for it): folder ``Lists.dev``
is the directory ``.Lists.dev``; ``INBOX`` (any case) is the Maildir itself. Refused
(:class:`BadFolderName`): empty names or components, ``/`` or ``\\``, control characters, a
component ``..`` or ``.``, more than :data:`MAX_DEPTH` levels or :data:`MAX_NAME` bytes, and
modified UTF-7 that does not decode. Pure code, no I/O.
"""

from __future__ import annotations

import base64
import binascii

DELIMITER = "."
MAX_NAME = 255  # bytes of the on-disk directory name
MAX_DEPTH = 16


class BadFolderName(ValueError):
    """A folder name that cannot name a directory under the user's Maildir."""


def mutf7_encode(name: str) -> str:
    """``name`` (Unicode) in modified UTF-7."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append(
                "&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-"
            )
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def mutf7_decode(text: str) -> str:
    """Modified UTF-7 ``text`` as Unicode; :class:`BadFolderName` when malformed."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if not 0x20 <= ord(ch) <= 0x7E:
            raise BadFolderName("folder name is not modified UTF-7")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise BadFolderName("unterminated modified UTF-7 sequence")
        chunk = text[i + 1 : end]
        if not chunk:
            out.append("&")
        else:
            padded = chunk.replace(",", "/") + "=" * (-len(chunk) % 4)
            try:
                raw = base64.b64decode(padded, validate=True)
                decoded = raw.decode("utf-16-be")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                raise BadFolderName("bad modified UTF-7 sequence") from None
            if len(raw) % 2 or any(0x20 <= ord(c) <= 0x7E for c in decoded):
                raise BadFolderName("non-canonical modified UTF-7 sequence")
            out.append(decoded)
        i = end + 1
    return "".join(out)


def is_inbox(name: str) -> bool:
    return name.upper() == "INBOX"


def normalise(name: str) -> str:
    """The canonical spelling: ``INBOX`` upper-cased (also as the first level), else as given."""
    head, sep, rest = name.partition(DELIMITER)
    if is_inbox(head):
        return "INBOX" + sep + rest
    return name


def components(name: str) -> tuple[str, ...]:
    """The checked levels of a non-INBOX folder name (mUTF-7 wire form)."""
    if is_inbox(name):
        raise BadFolderName("INBOX is not a subfolder")
    mutf7_decode(name)  # validates
    parts = tuple(name.split(DELIMITER))
    if len(parts) > MAX_DEPTH:
        raise BadFolderName("folder hierarchy too deep")
    for part in parts:
        if part in ("", ".", ".."):
            raise BadFolderName("empty or relative folder name component")
        if any(c in "/\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in part):
            raise BadFolderName("folder name has a forbidden character")
    return parts


def directory(name: str) -> str:
    """The Maildir++ directory for folder ``name`` ("" for INBOX); :class:`BadFolderName`."""
    name = normalise(name)
    if name == "INBOX":
        return ""
    parts = components(name)
    on_disk = "." + DELIMITER.join(parts)
    if len(on_disk.encode()) > MAX_NAME:
        raise BadFolderName("folder name too long")
    return on_disk


def from_directory(entry: str) -> str | None:
    """The folder name of a Maildir++ directory entry, ``None`` when it is not a folder."""
    if not entry.startswith(".") or entry in (".", ".."):
        return None
    name = entry[1:]
    try:
        components(name)
    except BadFolderName:
        return None
    return name
