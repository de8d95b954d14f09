"""Message flags in Maildir file names (``<base>:2,<letters>``) and keywords in
``dovecot-keywords`` (``<index> <keyword>`` per line; index 0 is letter ``a`` … 25 is ``z``), the
layout Dovecot reads and writes. Pure code apart from :func:`read_keywords` /
:func:`write_keywords`."""

from __future__ import annotations

import contextlib
import os
import re

SYSTEM = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}
LETTER = {v.lower(): k for k, v in SYSTEM.items()}
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
KEYWORDS_FILE = "dovecot-keywords"
MAX_KEYWORDS = 26
_ATOM = re.compile(r"[!#$&'+\-.0-9:<>?@A-Z^_`a-z|~;=,/]{1,100}")  # atom-chars without specials


class TooManyKeywords(Exception):
    """All 26 keyword letters are taken in this folder."""


def split_name(filename: str) -> tuple[str, str]:
    """(base, info letters) of a Maildir file name."""
    base, sep, info = filename.partition(":")
    if sep and info.startswith("2,"):
        return base, info[2:]
    return base, ""


def is_keyword(word: str) -> bool:
    return not word.startswith("\\") and bool(_ATOM.fullmatch(word))


def canonical(flag: str) -> str:
    """System flags in their canonical case; keywords as given."""
    for system in SYSTEM_FLAGS:
        if flag.lower() == system.lower():
            return system
    return flag


def decode(letters: str, keywords: list[str]) -> frozenset[str]:
    flags: set[str] = set()
    for letter in letters:
        if letter in SYSTEM:
            flags.add(SYSTEM[letter])
        elif "a" <= letter <= "z":
            index = ord(letter) - ord("a")
            if index < len(keywords) and keywords[index]:
                flags.add(keywords[index])
    return frozenset(flags)


def encode(flags: frozenset[str], keywords: list[str]) -> tuple[str, bool]:
    """The info letters for ``flags`` (sorted, as the Maildir spec asks); True when
    ``keywords`` was extended (the caller saves it). :class:`TooManyKeywords`."""
    letters: set[str] = set()
    grew = False
    for flag in flags:
        letter = LETTER.get(flag.lower())
        if letter is not None:
            letters.add(letter)
            continue
        if flag.startswith("\\"):
            continue  # \Recent and unknown system flags are never stored
        if flag not in keywords:
            if len(keywords) >= MAX_KEYWORDS:
                raise TooManyKeywords(flag)
            keywords.append(flag)
            grew = True
        letters.add(chr(ord("a") + keywords.index(flag)))
    return "".join(sorted(letters)), grew


def filename(base: str, letters: str) -> str:
    return f"{base}:2,{letters}"


def read_keywords(dirfd: int) -> list[str]:
    try:
        fd = os.open(KEYWORDS_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    except FileNotFoundError:
        return []
    try:
        data = os.read(fd, 1 << 16).decode("utf-8", "replace")
    finally:
        os.close(fd)
    found: list[str] = [""] * MAX_KEYWORDS
    top = -1
    for line in data.splitlines():
        index, _, word = line.partition(" ")
        if index.isdigit() and int(index) < MAX_KEYWORDS and is_keyword(word):
            found[int(index)] = word
            top = max(top, int(index))
    return found[: top + 1]


def write_keywords(dirfd: int, keywords: list[str]) -> None:
    text = "".join(f"{i} {w}\n" for i, w in enumerate(keywords) if w)
    tmp = f"{KEYWORDS_FILE}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600, dir_fd=dirfd)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    try:
        os.rename(tmp, KEYWORDS_FILE, src_dir_fd=dirfd, dst_dir_fd=dirfd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dirfd)
        raise
