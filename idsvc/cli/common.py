"""Plumbing shared by the ``idsvc`` sub-commands: exit codes, error mapping, output, secrets input.

What it does: maps every ``IdsvcError`` to one exit code and a one-line message (no traceback);
reads passwords only from a TTY prompt, stdin or a file (never from argv, where ``ps`` and shell
history would show them); parses sizes like ``1G``; prints human tables or JSON.

What it does not do: talk to the directory (the command modules do, through the Provisioner).

How it fails: bad input raises ``InvalidInput`` with a message meant for the user; the caller
turns it into exit code 2.
"""

from __future__ import annotations

import getpass
import json
import os
import pwd
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from idsvc.errors import (
    AlreadyExists,
    AmbiguousEntry,
    ConfigError,
    Conflict,
    IdsvcError,
    InvalidInput,
    NotFound,
    PasswordError,
    ReadOnlyDirectory,
    TemporaryFailure,
)
from idsvc.model import Secret

# Exit codes (sysexits.h where one fits). Scripts rely on these; they are documented in --help.
EXIT_OK = 0
EXIT_FAILED = 1  # not found, authentication failed
EXIT_USAGE = 2  # usage error, invalid input, invalid configuration
EXIT_CONFLICT = 3  # exists already, stale revision, dependants, read-only directory
EXIT_SOFTWARE = 70  # EX_SOFTWARE: a bug; the message says so
EXIT_TEMPFAIL = 75  # EX_TEMPFAIL: directory down, store locked; try again later

MAX_SECRET_INPUT = 8192  # bytes read for one password or hash from stdin or a file
_SIZE = re.compile(r"(?i)^\s*(\d{1,20})\s*([kmgtp]?)(i?b)?\s*$")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}


def exit_code_for(exc: BaseException) -> int:
    """The exit code for an error raised by a command."""
    if isinstance(exc, TemporaryFailure):
        return EXIT_TEMPFAIL
    if isinstance(exc, NotFound):
        return EXIT_FAILED
    if isinstance(exc, AlreadyExists | Conflict | AmbiguousEntry | ReadOnlyDirectory):
        return EXIT_CONFLICT
    if isinstance(exc, InvalidInput | ConfigError | PasswordError):
        return EXIT_USAGE
    if isinstance(exc, IdsvcError):
        return EXIT_FAILED
    return EXIT_SOFTWARE


def one_line(text: str, limit: int = 500) -> str:
    """Collapse a message to one printable line (no control characters, bounded)."""
    flat = " ".join(text.split())
    flat = "".join(ch if ch.isprintable() else "?" for ch in flat)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def actor() -> str:
    """``cli:<login name>`` of the real user running the command (from the uid, not $USER)."""
    try:
        name = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        name = str(os.getuid())
    return f"cli:{name}"


def parse_size(text: str) -> int:
    """Bytes from ``1048576``, ``500M``, ``1G``, ``2GiB`` (binary units), or ``unlimited`` (0)."""
    if text.strip().lower() in ("unlimited", "none"):
        return 0
    match = _SIZE.match(text)
    if match is None:
        raise InvalidInput(f"invalid size {one_line(text, 40)!r}: use bytes or a K/M/G/T suffix")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def format_size(value: int) -> str:
    if value == 0:
        return "unlimited"
    for unit in ("P", "T", "G", "M", "K"):
        size = _UNITS[unit.lower()]
        if value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


def parse_services(text: str) -> list[str]:
    """``smtp,imap`` → ``["smtp", "imap"]`` (validated later by the Provisioner)."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if len(names) > 16:
        raise InvalidInput("too many services")
    return names


# -- secrets ----------------------------------------------------------------------------------


def _strip_newline(data: str) -> str:
    if data.endswith("\r\n"):
        return data[:-2]
    return data[:-1] if data.endswith("\n") else data


def read_stdin_secret(stream: TextIO | None = None, what: str = "password") -> str:
    """The first line of stdin (without its line ending), bounded."""
    stream = stream or sys.stdin
    data = stream.readline(MAX_SECRET_INPUT + 1)
    if len(data) > MAX_SECRET_INPUT:
        raise InvalidInput(f"{what} on stdin longer than {MAX_SECRET_INPUT} characters")
    value = _strip_newline(data)
    if not value:
        raise InvalidInput(f"no {what} on stdin")
    return value


def read_file_secret(path: Path, what: str = "password") -> str:
    """The first line of a file (without its line ending), bounded."""
    try:
        with path.open("r", encoding="utf-8") as fh:
            data = fh.readline(MAX_SECRET_INPUT + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read {what} file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{what} file {path} is not UTF-8") from exc
    if len(data) > MAX_SECRET_INPUT:
        raise InvalidInput(f"{what} in {path} longer than {MAX_SECRET_INPUT} characters")
    value = _strip_newline(data)
    if not value:
        raise InvalidInput(f"{what} file {path} is empty")
    return value


def prompt_secret(*, confirm: bool, prompt: str = "Password: ") -> str:
    """Ask on the terminal (echo off); with ``confirm`` ask twice and require the same answer."""
    if not sys.stdin.isatty():
        raise InvalidInput(
            "no password given: use --password-stdin or --password-file (no terminal to prompt on)"
        )
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("Retype password: ") != first:
        raise InvalidInput("passwords do not match")
    if not first:
        raise InvalidInput("empty password")
    return first


def get_password(args: Any, *, confirm: bool) -> Secret:
    """The password a command needs: ``--password-stdin``, ``--password-file`` or a TTY prompt."""
    if getattr(args, "password_stdin", False):
        return Secret(read_stdin_secret())
    path = getattr(args, "password_file", None)
    if path is not None:
        return Secret(read_file_secret(Path(path)))
    return Secret(prompt_secret(confirm=confirm))


# -- output -----------------------------------------------------------------------------------


def print_json(data: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    out.write(json.dumps(data, ensure_ascii=False, sort_keys=False, default=str) + "\n")


def print_record(data: Mapping[str, Any], out: TextIO | None = None) -> None:
    """``key: value`` lines for one object (lists joined with ', ')."""
    out = out or sys.stdout
    width = max((len(k) for k in data), default=0)
    for key, value in data.items():
        if isinstance(value, list | tuple):
            value = ", ".join(str(v) for v in value) or "-"
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        out.write(f"{key + ':':<{width + 1}} {value}\n")


class Table:
    """A streaming text table: widths come from the first batch of rows (later rows may overflow
    their column rather than holding every row in memory)."""

    def __init__(self, headers: Sequence[str], out: TextIO | None = None) -> None:
        self._headers = list(headers)
        self._widths: list[int] | None = None
        self._out = out or sys.stdout

    def rows(self, rows: Iterable[Sequence[str]]) -> None:
        batch = [[one_line(str(cell), 200) for cell in row] for row in rows]
        if self._widths is None:
            self._widths = [
                max([len(h)] + [len(r[i]) for r in batch]) for i, h in enumerate(self._headers)
            ]
            self._line(self._headers)
        for row in batch:
            self._line(row)

    def finish(self) -> None:
        if self._widths is None:  # no rows at all: still show the header so output is uniform
            self.rows([])

    def _line(self, cells: Sequence[str]) -> None:
        assert self._widths is not None
        parts = [c.ljust(w) for c, w in zip(cells[:-1], self._widths[:-1], strict=True)]
        self._out.write("  ".join([*parts, cells[-1]]).rstrip() + "\n")
