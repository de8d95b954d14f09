"""Contract: listings — order by key, prefix, opaque cursors across pages, limits, totals."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from idsvc.directory.base import MAX_PAGE, Directory
from idsvc.errors import InvalidInput, NotFound
from idsvc.model import Account, Address, Alias, Domain, Page
from tests.contract.support import account, add_domains, alias

Lister = Callable[..., Awaitable[Page[Any]]]


async def collect(
    lister: Lister, *args: Any, limit: int, start: str | None = None, **kwargs: Any
) -> list[Page[Any]]:
    """Every page of one listing, following cursors (bounded, so a broken cursor cannot loop)."""
    pages: list[Page[Any]] = []
    cursor = start
    for _ in range(1000):
        page = await lister(*args, cursor=cursor, limit=limit, **kwargs)
        pages.append(page)
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor
    raise AssertionError("listing did not end")


def key(item: Any) -> str:
    """The listing key of a domain (name), account (address) or alias (source)."""
    if isinstance(item, Account):
        return str(item.address)
    if isinstance(item, Alias):
        return item.source
    assert isinstance(item, Domain)
    return item.name


def keys(pages: list[Page[Any]]) -> list[str]:
    return [key(item) for page in pages for item in page.items]


async def add_many(directory: Directory, texts: list[str], concurrency: int = 8) -> None:
    queue = list(texts)

    async def worker() -> None:
        while queue:
            await directory.add_account(account(queue.pop()))

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def test_250_accounts_in_pages_of_100(directory: Directory) -> None:
    await add_domains(directory, "example.org")
    expected = sorted(f"user{i}@example.org" for i in range(250))
    await add_many(directory, expected)
    pages = await collect(directory.list_accounts, "example.org", limit=100)
    assert [len(p.items) for p in pages] == [100, 100, 50]
    assert keys(pages) == expected
    assert all(p.total == 250 for p in pages)
    assert [p.next_cursor is None for p in pages] == [False, False, True]
    # without a domain the same accounts come in the same order
    assert keys(await collect(directory.list_accounts, limit=100)) == expected


async def test_last_page_exactly_full_has_no_cursor(directory: Directory) -> None:
    await add_domains(directory, "example.org")
    expected = sorted(f"u{i:03d}@example.org" for i in range(40))
    await add_many(directory, expected)
    pages = await collect(directory.list_accounts, "example.org", limit=20)
    assert [len(p.items) for p in pages] == [20, 20]
    assert pages[-1].next_cursor is None
    assert keys(pages) == expected


async def test_listing_is_ordered_by_code_point(directory: Directory) -> None:
    await add_domains(directory, "example.org")
    texts = [
        "a.b@example.org",
        "a@example.org",
        "a-b@example.org",
        "a_b@example.org",
        "a0@example.org",
        "ab@example.org",
        "a~@example.org",
        "a+b@example.org",
    ]
    await add_many(directory, texts, concurrency=1)
    listed = keys(await collect(directory.list_accounts, limit=3))
    assert listed == sorted(texts)


async def test_empty_listings(directory: Directory) -> None:
    for page in (
        await directory.list_domains(),
        await directory.list_accounts(),
        await directory.list_aliases(),
    ):
        assert page.items == []
        assert page.next_cursor is None
        assert page.total == 0
    await add_domains(directory, "example.org")
    page = await directory.list_accounts("example.org")
    assert (page.items, page.next_cursor, page.total) == ([], None, 0)


async def test_listing_by_domain(directory: Directory) -> None:
    await add_domains(directory, "a.example", "b.example", "c.example")
    await add_many(directory, [f"u{i}@{d}" for i in range(5) for d in ("a.example", "b.example")])
    page = await directory.list_accounts("b.example")
    assert [str(a.address) for a in page.items] == [f"u{i}@b.example" for i in range(5)]
    assert page.total == 5
    assert (await directory.list_accounts("c.example")).total == 0
    everything = await directory.list_accounts()
    assert everything.total == 10
    assert keys([everything]) == sorted(
        f"u{i}@{d}" for i in range(5) for d in ("a.example", "b.example")
    )


async def test_listing_a_missing_domain_not_found(directory: Directory) -> None:
    await directory.add_domain(Domain(name="example.org", alias_domains=("example.net",)))
    with pytest.raises(NotFound):
        await directory.list_accounts("nowhere.example")
    with pytest.raises(NotFound):
        await directory.list_aliases("nowhere.example")
    with pytest.raises(NotFound):
        await directory.list_accounts("example.net")


async def test_prefix_is_literal(directory: Directory) -> None:
    """``%``, ``_``, ``*``, ``?`` are valid in local parts and must not act as wildcards."""
    await add_domains(directory, "example.org")
    texts = [
        "a_b@example.org",
        "axb@example.org",
        "a%c@example.org",
        "abc@example.org",
        "a*x@example.org",
        "a?b@example.org",
        "a@example.org",
        "b@example.org",
    ]
    await add_many(directory, texts, concurrency=1)
    for prefix, wanted in {
        "a_": ["a_b@example.org"],
        "a%": ["a%c@example.org"],
        "a*": ["a*x@example.org"],
        "a?": ["a?b@example.org"],
        "a@": ["a@example.org"],
        "*": [],
        "%": [],
        "a": sorted(t for t in texts if t.startswith("a")),
        "": sorted(texts),
        "zzz": [],
    }.items():
        page = await directory.list_accounts(prefix=prefix)
        assert keys([page]) == wanted, prefix
        assert page.total == len(wanted), prefix
        same = await directory.list_accounts("example.org", prefix=prefix)
        assert keys([same]) == wanted, prefix


async def test_prefix_with_cursor_pages(directory: Directory) -> None:
    await add_domains(directory, "example.org")
    texts = (
        [f"sales{i:02d}@example.org" for i in range(25)]
        + [f"s{i}@example.org" for i in range(5)]
        + [f"support{i}@example.org" for i in range(5)]
    )
    await add_many(directory, texts)
    pages = await collect(directory.list_accounts, "example.org", prefix="sales", limit=10)
    assert [len(p.items) for p in pages] == [10, 10, 5]
    assert keys(pages) == sorted(t for t in texts if t.startswith("sales"))
    assert all(p.total == 25 for p in pages)


async def test_cursor_survives_changes_between_pages(directory: Directory) -> None:
    await add_domains(directory, "example.org")
    await add_many(directory, [f"m{i}@example.org" for i in range(1, 10)], concurrency=1)
    first = await directory.list_accounts(limit=3)
    assert keys([first]) == ["m1@example.org", "m2@example.org", "m3@example.org"]
    assert first.next_cursor is not None
    # delete the last key of the page and the next one, add keys before and after the cursor
    await directory.delete_account(Address.parse("m3@example.org"))
    await directory.delete_account(Address.parse("m4@example.org"))
    await directory.add_account(account("m0@example.org"))
    await directory.add_account(account("m45@example.org"))
    rest = await collect(directory.list_accounts, limit=3, start=first.next_cursor)
    assert keys(rest) == [f"m{i}@example.org" for i in ("45", 5, 6, 7, 8, 9)]


async def test_limit_is_capped_at_max_page(directory: Directory) -> None:
    await add_domains(directory, "example.org")
    await add_many(directory, [f"n{i:04d}@example.org" for i in range(MAX_PAGE + 5)])
    page = await directory.list_accounts("example.org", limit=MAX_PAGE * 10)
    assert len(page.items) == MAX_PAGE
    assert page.total == MAX_PAGE + 5
    assert page.next_cursor is not None
    rest = await directory.list_accounts("example.org", cursor=page.next_cursor, limit=MAX_PAGE)
    assert len(rest.items) == 5
    assert rest.next_cursor is None


async def test_bad_limit_and_cursor_are_refused(directory: Directory) -> None:
    await add_domains(directory, "example.org")
    for lister in (directory.list_domains, directory.list_accounts, directory.list_aliases):
        with pytest.raises(InvalidInput):
            await lister(limit=0)
        with pytest.raises(InvalidInput):
            await lister(limit=-1)
        with pytest.raises(InvalidInput):
            await lister(cursor="not a cursor!")


async def test_list_domains_with_prefix_and_pages(directory: Directory) -> None:
    names = [f"d{i:02d}.example" for i in range(12)] + ["other.example", "d.example"]
    await add_domains(directory, *names)
    pages = await collect(directory.list_domains, limit=5)
    assert keys(pages) == sorted(names)
    assert [len(p.items) for p in pages] == [5, 5, 4]
    assert all(p.total == 14 for p in pages)
    only = await collect(directory.list_domains, prefix="d0", limit=4)
    assert keys(only) == [f"d0{i}.example" for i in range(10)]
    assert all(p.total == 10 for p in only)
    listed = await directory.list_domains(prefix="other")
    assert listed.items == [await directory.find_domain("other.example")]


async def test_list_aliases(directory: Directory) -> None:
    await add_domains(directory, "a.example", "b.example")
    sources = [
        "@a.example",
        "0@a.example",
        "info@a.example",
        "sales@a.example",
        "@b.example",
        "info@b.example",
    ]
    for source in sources:
        await directory.add_alias(alias(source, "x@remote.example"))
    everything = await collect(directory.list_aliases, limit=4)
    assert keys(everything) == sorted(sources)
    in_a = await directory.list_aliases("a.example")
    assert keys([in_a]) == sorted(s for s in sources if s.endswith("@a.example"))
    assert in_a.total == 4
    info = await directory.list_aliases(prefix="info@")
    assert keys([info]) == ["info@a.example", "info@b.example"]
    catchall = await directory.list_aliases(prefix="@")
    assert keys([catchall]) == ["@a.example", "@b.example"]
    assert catchall.items[0] == await directory.find_alias("@a.example")
