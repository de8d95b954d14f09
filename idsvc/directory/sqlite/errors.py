"""Map ``sqlite3`` exceptions to the idsvc error tree (the only place that inspects them).

* locked / busy after the busy timeout, I/O error, disk full, cannot open, read-only file, out of
  memory, interrupted → ``TemporaryFailure``: the caller fails temporarily and retries later;
* a UNIQUE constraint or one of our namespace triggers → ``AlreadyExists``;
* a FOREIGN KEY, CHECK or NOT NULL constraint → ``Conflict`` (the stored state forbids the write);
* a corrupt file or one that is not a database → ``DirectoryError`` saying so;
* anything else → ``DirectoryError`` with SQLite's message (SQLite messages never carry values).
"""

from __future__ import annotations

import sqlite3

from idsvc.directory.sqlite.schema import TRIGGER_TAG
from idsvc.errors import AlreadyExists, Conflict, DirectoryError, TemporaryFailure

# Primary result codes (https://www.sqlite.org/rescode.html); extended codes keep them in the
# low byte.
SQLITE_NOMEM = 7
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_READONLY = 8
SQLITE_INTERRUPT = 9
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
SQLITE_PROTOCOL = 15
SQLITE_NOTADB = 26

_TEMPORARY = {
    SQLITE_BUSY: "the database is locked",
    SQLITE_LOCKED: "the database is locked",
    SQLITE_NOMEM: "out of memory",
    SQLITE_READONLY: "the database file is read-only",
    SQLITE_INTERRUPT: "the query was interrupted",
    SQLITE_IOERR: "disk I/O error",
    SQLITE_FULL: "the disk is full",
    SQLITE_CANTOPEN: "cannot open the database file",
    SQLITE_PROTOCOL: "locking protocol error",
}
_CORRUPT = {SQLITE_CORRUPT, SQLITE_NOTADB}


def primary_code(exc: sqlite3.Error) -> int | None:
    """SQLite's primary result code for ``exc``, or None when the module did not set one."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def map_error(exc: sqlite3.Error) -> DirectoryError:
    """The idsvc error for a ``sqlite3`` exception (to be raised ``from exc``)."""
    message = str(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        if message.startswith(TRIGGER_TAG):
            return AlreadyExists(message.removeprefix(TRIGGER_TAG).strip())
        if message.startswith("UNIQUE constraint failed"):
            return AlreadyExists(f"already exists ({message})")
        return Conflict(f"the stored state forbids this change ({message})")
    code = primary_code(exc)
    if code in _TEMPORARY:
        return TemporaryFailure(f"embedded store unavailable: {_TEMPORARY[code]}")
    if code in _CORRUPT:
        return DirectoryError(
            f"embedded store file is corrupt or not an SQLite database ({message}); "
            "restore it from a backup"
        )
    return DirectoryError(f"embedded store error: {message}")
