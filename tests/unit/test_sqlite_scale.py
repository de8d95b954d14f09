"""Embedded store at scale: every statement is an indexed search, and a store with 1M accounts is
never loaded into memory (lookups and pages allocate a bounded amount, whatever the row count).

The row count of the big test is ``IDSVC_SCALE_ROWS`` (default 1,000,000).
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
import tracemalloc
from pathlib import Path

import pytest

from idsvc.config import EmbeddedSettings
from idsvc.directory.base import AccountChanges, AliasChanges, DomainChanges
from idsvc.directory.sqlite import SqliteDirectory
from idsvc.directory.sqlite.queries import SQL_INSERT_ACCOUNT
from idsvc.model import Account, Address, Alias, Domain, utcnow

ROWS = int(os.environ.get("IDSVC_SCALE_ROWS", "1000000"))
DOMAINS = 100


def plan(raw: sqlite3.Connection, statement: str) -> list[str]:
    return [row[3] for row in raw.execute("EXPLAIN QUERY PLAN " + statement)]


async def test_every_statement_is_an_indexed_search(tmp_path: Path) -> None:
    path = tmp_path / "idsvc.db"
    store = await SqliteDirectory.open(EmbeddedSettings(path=path, workers=1))
    statements: list[str] = []
    try:
        await store.add_domain(Domain(name="a.example", alias_domains=("b.example",)))
        await store.add_domain(Domain(name="c.example"))
        await store._runner.run(lambda conn: conn.set_trace_callback(statements.append), "plain")
        user = Address.parse("u@a.example")
        await store.add_account(Account(user, None))
        await store.add_alias(Alias("l@a.example", ("u@a.example",)))
        await store.find_domain("b.example")
        await store.find_domain("a.example")
        await store.find_account(user)
        await store.find_alias("l@a.example")
        await store.update_domain("a.example", DomainChanges(alias_domains=("d.example",)))
        await store.update_account(user, AccountChanges(quota=1), if_revision=1)
        await store.update_alias("l@a.example", AliasChanges(enabled=False))
        page = await store.list_domains(limit=1)
        await store.list_domains(prefix="a", cursor=page.next_cursor)
        await store.list_accounts()
        await store.list_accounts("a.example", prefix="u", limit=1)
        await store.list_aliases("a.example")
        await store.list_aliases(prefix="l@")
        await store.bulk_add_accounts([Account(Address.parse("v@a.example"), None)])
        await store.delete_alias("l@a.example")
        await store.delete_account(user)
        await store.delete_domain("c.example")
        await store.delete_domain("a.example", cascade=True)
        await store._runner.run(lambda conn: conn.set_trace_callback(None), "plain")
    finally:
        await store.close()
    checked = 0
    with sqlite3.connect(path) as raw:
        for statement in statements:
            verb = statement.lstrip().split(None, 1)[0].upper()
            if verb not in {"SELECT", "UPDATE", "DELETE"}:
                continue
            steps = plan(raw, statement)
            checked += 1
            assert steps, statement
            for step in steps:
                assert step == "SCAN CONSTANT ROW" or not step.startswith("SCAN"), steps
                assert "TEMP B-TREE" not in step, (statement, steps)
    raw.close()
    assert checked >= 20


def fill(path: Path, n: int) -> None:
    """Write ``n`` accounts straight through sqlite3 (the test is about reading them back;
    ``bulk_add_accounts`` has its own tests and is several times slower per row)."""
    now = int(utcnow().timestamp())
    with sqlite3.connect(path) as raw:
        ids = dict(raw.execute("SELECT name, id FROM domains").fetchall())
    raw.close()
    rows = (
        (
            f"user{i}@d{i % DOMAINS}.example",
            ids[f"d{i % DOMAINS}.example"],
            "{PLAIN}secret",
            "",
            1,
            0,
            "imap,pop3,smtp,submission",
            now,
            now,
            1,
        )
        for i in range(n)
    )
    with sqlite3.connect(path) as raw:
        raw.executemany(SQL_INSERT_ACCOUNT, rows)
    raw.close()


@pytest.mark.slow
async def test_a_million_accounts_are_never_loaded(tmp_path: Path) -> None:
    path = tmp_path / "idsvc.db"
    store = await SqliteDirectory.open(EmbeddedSettings(path=path))
    for d in range(DOMAINS):
        await store.add_domain(Domain(name=f"d{d}.example"))
    await store.close()
    fill(path, ROWS)
    store = await SqliteDirectory.open(EmbeddedSettings(path=path))
    try:
        rng = random.Random(7)
        tracemalloc.start()
        try:
            started = time.monotonic()
            for _ in range(1000):
                i = rng.randrange(ROWS)
                found = await store.find_account(Address(f"user{i}", f"d{i % DOMAINS}.example"))
                assert found is not None
            lookups = time.monotonic() - started
            missing = await store.find_account(Address("nobody", "d1.example"))
            assert missing is None
            first = await store.list_accounts(limit=5000)
            second = await store.list_accounts(cursor=first.next_cursor, limit=1000)
            in_domain = await store.list_accounts("d42.example", prefix="user9", limit=1000)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(first.items) == len(second.items) == 1000
        assert first.total == ROWS
        assert in_domain.total == sum(1 for i in range(42, ROWS, DOMAINS) if str(i).startswith("9"))
        # a page of 1000 accounts is about 1 MB of objects; the store itself is ~180 MB on disk
        assert peak < 16 * 1024 * 1024, peak
        # an indexed lookup is far below a millisecond; a scan of 1M rows is ~100 ms each
        assert lookups / 1000 < 0.02, lookups
    finally:
        await store.close()
