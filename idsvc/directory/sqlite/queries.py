"""The SQL of the embedded store and the steps that run inside a transaction on a worker thread.

What it does: holds every statement (as constants, so tests can inspect their query plans) and the
small synchronous steps ``store.py`` composes into transactions: resolve a domain, check that a
name or an address is free, check a revision, insert a batch of accounts, read one listing page.

What it does not: open transactions (``runner.py`` does) or touch the event loop.

How it fails: ``NotFound``, ``AlreadyExists``, ``Conflict`` and ``InvalidInput`` with messages that
name the object; ``sqlite3`` errors propagate to ``runner.py``, which maps them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from idsvc.directory.sqlite import codec
from idsvc.directory.sqlite.codec import ACCOUNT_COLUMNS, ALIAS_COLUMNS, DOMAIN_COLUMNS, Row
from idsvc.errors import AlreadyExists, Conflict, DirectoryError, InvalidInput, NotFound
from idsvc.model import Account, Page

T = TypeVar("T")

ALIAS_NAMES = "(SELECT group_concat(a.name, ' ') FROM alias_domains a WHERE a.domain_id = d.id)"

# ``tests/unit/test_sqlite_scale.py`` checks the query plan of every statement that runs.
# The f-strings below (S608) only ever interpolate the column lists and table names of this
# module; every value is a bound parameter.
SQL_FIND_DOMAIN = f"""
SELECT {DOMAIN_COLUMNS}, {ALIAS_NAMES} FROM domains d
WHERE d.id = coalesce((SELECT id FROM domains WHERE name = :name),
                      (SELECT domain_id FROM alias_domains WHERE name = :name))
"""  # noqa: S608
SQL_FIND_ACCOUNT = f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE address = ?"  # noqa: S608
SQL_FIND_ALIAS = f"SELECT {ALIAS_COLUMNS} FROM aliases WHERE source = ?"  # noqa: S608
SQL_DOMAIN_ID = "SELECT id FROM domains WHERE name = ?"
SQL_DOMAIN_FOR_UPDATE = (
    f"SELECT d.id, {DOMAIN_COLUMNS}, {ALIAS_NAMES} FROM domains d WHERE d.name = ?"  # noqa: S608
)
SQL_NAME_USE = """
SELECT 'a domain' FROM domains WHERE name = :name
UNION ALL SELECT 'an alias domain of ' || d.name
    FROM alias_domains a JOIN domains d ON d.id = a.domain_id WHERE a.name = :name
"""
SQL_ADDRESS_USE = """
SELECT 'an account' FROM accounts WHERE address = :key
UNION ALL SELECT 'an alias' FROM aliases WHERE source = :key
"""
SQL_INSERT_ACCOUNT = """
INSERT INTO accounts (address, domain_id, password_hash, display_name, enabled, quota, services,
                      created, updated, revision)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

# listing specs: (table, key column, selected columns, cursor kind tag)
DOMAIN_LIST = ("domains d", "d.name", f"{DOMAIN_COLUMNS}, {ALIAS_NAMES}", "dom")
ACCOUNT_LIST = ("accounts", "address", ACCOUNT_COLUMNS, "acc")
ALIAS_LIST = ("aliases", "source", ALIAS_COLUMNS, "ali")


def pick(new: T | None, old: T) -> T:
    return old if new is None else new


def rowid(cur: sqlite3.Cursor) -> int:
    if cur.lastrowid is None:
        raise DirectoryError("embedded store did not return a row id")
    return cur.lastrowid


def check_revision(what: str, current: int, expected: int | None) -> None:
    if expected is not None and expected != current:
        raise Conflict(f"{what} is at revision {current}, not {expected}")


def domain_id(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute(SQL_DOMAIN_ID, (name,)).fetchone()
    if row is None:
        raise NotFound(f"domain {name} does not exist")
    return int(row[0])


def name_free(conn: sqlite3.Connection, name: str, what: str) -> None:
    row = conn.execute(SQL_NAME_USE, {"name": name}).fetchone()
    if row is not None:
        raise AlreadyExists(f"{what} {name} is taken: it is already {row[0]}")


def address_free(conn: sqlite3.Connection, key: str) -> None:
    row = conn.execute(SQL_ADDRESS_USE, {"key": key}).fetchone()
    if row is not None:
        raise AlreadyExists(f"{key} already exists as {row[0]}")


def set_alias_domains(conn: sqlite3.Connection, domain_id: int, names: tuple[str, ...]) -> None:
    conn.executemany(
        "INSERT INTO alias_domains (name, domain_id) VALUES (?, ?)",
        [(name, domain_id) for name in names],
    )


def check_account(account: Account) -> None:
    codec.check_hash(account.password_hash)
    codec.check_text(account.display_name, "display name")
    codec.check_quota(account.quota)
    codec.check_services(account.services)
    if account.revision < 1:
        raise InvalidInput("revision must be at least 1")


def insert_accounts(conn: sqlite3.Connection, accounts: list[Account]) -> int:
    domains = sorted({a.address.domain for a in accounts})
    ids: dict[str, int] = {}
    for name in domains:
        ids[name] = domain_id(conn, name)
    rows = []
    for account in accounts:
        check_account(account)
        rows.append(codec.account_row(account, ids[account.address.domain]))
    conn.executemany(SQL_INSERT_ACCOUNT, rows)
    return len(rows)


def list_page(
    conn: sqlite3.Connection,
    spec: tuple[str, str, str, str],
    convert: Callable[[Row], T],
    domain: str | None,
    prefix: str,
    after: str | None,
    size: int,
) -> Page[T]:
    """One page: keys in ``[low, high)`` of ``prefix``, after ``after``, at most ``size`` items.

    Run it in a snapshot transaction so ``total`` and the items see the same state. The range is
    built only from the bounds that exist, so SQLite uses the key index as a range (never a scan
    from the start); ``total`` ignores the cursor.
    """
    table, key, columns, kind = spec
    low, high = codec.prefix_range(prefix)
    where: list[str] = []
    params: list[Any] = []
    if domain is not None:
        where.append("domain_id = ?")
        params.append(domain_id(conn, domain))
    if high is not None:
        where.append(f"{key} < ?")
        params.append(high)
    count_sql = f"SELECT count(*) FROM {table} WHERE {' AND '.join([*where, f'{key} >= ?'])}"  # noqa: S608
    total = conn.execute(count_sql, [*params, low]).fetchone()[0]
    if after is not None and after >= low:
        where.append(f"{key} > ?")
        params.append(after)
    else:
        where.append(f"{key} >= ?")
        params.append(low)
    rows = conn.execute(
        f"SELECT {columns} FROM {table} WHERE {' AND '.join(where)} ORDER BY {key} LIMIT ?",  # noqa: S608
        [*params, size + 1],
    ).fetchall()
    more = len(rows) > size
    return Page(
        items=[convert(row) for row in rows[:size]],
        next_cursor=codec.encode_cursor(kind, rows[size - 1][0]) if more else None,
        total=total,
    )
