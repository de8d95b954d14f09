"""On-disk layout of the embedded store: file preparation, connection set-up and the schema.

What it does: creates the state directory (0700) and the database file (0600) when missing, refuses
a file that is not an SQLite database before SQLite touches it, opens connections with the pragmas
every connection needs (foreign keys, busy timeout, ``synchronous=NORMAL``), switches the file to
WAL and creates or migrates the schema, versioned by ``PRAGMA user_version``.

What it does not: run queries for the directory (``store.py``) or map errors (``errors.py``).

How it fails: every problem with the file raises ``DirectoryError`` naming the path and the reason
(not a database, a directory, a schema newer than this program, foreign tables, unwritable).

Schema notes. Timestamps are integer Unix seconds (UTC); booleans are 0/1 with CHECKs; services are
a sorted comma-separated list; alias destinations a JSON array (sorted, unique). Each lookup key has
a UNIQUE index, each per-domain listing a ``(domain_id, key)`` index. Triggers keep one namespace
for domain names and alias-domain names, and one for account addresses and alias sources, so the
rules hold even for writes that bypass the Python checks. Accounts and aliases reference their
domain without ON DELETE CASCADE: only an explicit cascade in ``store.py`` removes them.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from idsvc.errors import DirectoryError

SCHEMA_VERSION = 1
SQLITE_HEADER = b"SQLite format 3\x00"

# Trigger messages (in _SCHEMA_V1) start with this tag so ``errors.py`` maps them to AlreadyExists.
TRIGGER_TAG = "idsvc:"

_SCHEMA_V1 = """
CREATE TABLE domains (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    enabled       INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    default_quota INTEGER NOT NULL CHECK (default_quota >= 0),
    description   TEXT    NOT NULL,
    created       INTEGER NOT NULL,
    updated       INTEGER NOT NULL,
    revision      INTEGER NOT NULL CHECK (revision >= 1)
);
CREATE TABLE alias_domains (
    name      TEXT    NOT NULL PRIMARY KEY,
    domain_id INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX alias_domains_by_domain ON alias_domains(domain_id, name);
CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY,
    address       TEXT    NOT NULL UNIQUE,
    domain_id     INTEGER NOT NULL REFERENCES domains(id),
    password_hash TEXT,
    display_name  TEXT    NOT NULL,
    enabled       INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    quota         INTEGER NOT NULL CHECK (quota >= 0),
    services      TEXT    NOT NULL,
    created       INTEGER NOT NULL,
    updated       INTEGER NOT NULL,
    revision      INTEGER NOT NULL CHECK (revision >= 1)
);
CREATE INDEX accounts_by_domain ON accounts(domain_id, address);
CREATE TABLE aliases (
    id           INTEGER PRIMARY KEY,
    source       TEXT    NOT NULL UNIQUE,
    domain_id    INTEGER NOT NULL REFERENCES domains(id),
    destinations TEXT    NOT NULL,
    enabled      INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    created      INTEGER NOT NULL,
    updated      INTEGER NOT NULL,
    revision     INTEGER NOT NULL CHECK (revision >= 1)
);
CREATE INDEX aliases_by_domain ON aliases(domain_id, source);
CREATE TRIGGER domain_name_free BEFORE INSERT ON domains
    WHEN EXISTS (SELECT 1 FROM alias_domains WHERE name = NEW.name)
    BEGIN SELECT RAISE(ABORT, 'idsvc: the name is already an alias domain'); END;
CREATE TRIGGER alias_domain_name_free BEFORE INSERT ON alias_domains
    WHEN EXISTS (SELECT 1 FROM domains WHERE name = NEW.name)
    BEGIN SELECT RAISE(ABORT, 'idsvc: the alias domain is already a domain'); END;
CREATE TRIGGER account_address_free BEFORE INSERT ON accounts
    WHEN EXISTS (SELECT 1 FROM aliases WHERE source = NEW.address)
    BEGIN SELECT RAISE(ABORT, 'idsvc: the address is already an alias'); END;
CREATE TRIGGER alias_source_free BEFORE INSERT ON aliases
    WHEN EXISTS (SELECT 1 FROM accounts WHERE address = NEW.source)
    BEGIN SELECT RAISE(ABORT, 'idsvc: the source is already an account'); END;
"""

# MIGRATIONS[n] brings a store from user_version n to n + 1.
MIGRATIONS: dict[int, str] = {0: _SCHEMA_V1}


def prepare_file(path: Path) -> None:
    """Create the parent directory (0700) and the file (0600) if missing; refuse non-SQLite files.

    Existing directories and files keep their modes: an operator may have chosen them on purpose.
    """
    try:
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True)
        if path.exists() and not stat.S_ISREG(path.stat().st_mode):
            raise DirectoryError(f"embedded store {path} is not a regular file")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            header = os.read(fd, len(SQLITE_HEADER))
        finally:
            os.close(fd)
    except OSError as exc:
        raise DirectoryError(f"cannot open embedded store {path}: {exc.strerror}") from exc
    if header and header != SQLITE_HEADER:
        raise DirectoryError(f"embedded store {path} is not an SQLite database (bad file header)")


def connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A new connection in autocommit mode (transactions are explicit ``BEGIN``s).

    ``check_same_thread`` is off only so that ``runner.py`` can close a connection after its owner
    thread has been joined; while that thread lives, no other thread touches its connection.
    """
    conn = sqlite3.connect(
        str(path),
        timeout=busy_timeout,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=64,
    )
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def initialise(conn: sqlite3.Connection, path: Path) -> None:
    """Switch to WAL and bring the schema to ``SCHEMA_VERSION`` (in one write transaction)."""
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise DirectoryError(f"embedded store {path}: cannot use WAL journal mode (got {mode})")
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise DirectoryError(
                f"embedded store {path} has schema version {version}, newer than this idsvc "
                f"understands ({SCHEMA_VERSION}); upgrade idsvc"
            )
        if version == 0:
            foreign = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
            if foreign:
                raise DirectoryError(
                    f"embedded store {path} is an SQLite database of another program "
                    "(it has tables but no idsvc schema version)"
                )
        while version < SCHEMA_VERSION:
            for statement in _statements(MIGRATIONS[version]):
                conn.execute(statement)
            version += 1
            conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _statements(script: str) -> list[str]:
    """Split a DDL script into statements (``executescript`` would commit our transaction)."""
    out: list[str] = []
    current = ""
    for line in script.strip().splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    if current.strip():
        raise RuntimeError("incomplete statement in the schema script")
    return out
