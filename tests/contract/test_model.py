"""Contract: a seeded random sequence of operations checked step by step against a tiny in-memory
model of the rules (namespaces, cascades, revisions, compare-and-swap). Every result and every
error class must match the model, and at the end every listing must equal the model's content.

Operations are generated so that at most one error rule applies to each, so the expected error is
never a matter of which check a backend happens to run first.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from idsvc.directory.base import (
    AccountChanges,
    AliasChanges,
    Directory,
    DomainChanges,
)
from idsvc.errors import AlreadyExists, Conflict, DirectoryError, NotFound
from idsvc.model import Address, Domain
from tests.contract.support import account, alias

DOMAIN_NAMES = [f"d{i}.example" for i in range(5)]
ALIAS_NAMES = [f"x{i}.example" for i in range(4)]
LOCALS = ["a", "b", "c", "o'neil", "a*b"]


@dataclass
class State:
    """What the store must hold: revisions and the fields the operations change."""

    domains: dict[str, tuple[int, str, frozenset[str]]] = field(default_factory=dict)
    accounts: dict[str, tuple[int, int]] = field(default_factory=dict)  # rev, quota
    aliases: dict[str, tuple[int, frozenset[str]]] = field(default_factory=dict)

    def owner(self, name: str) -> str | None:
        """The real domain that owns ``name`` as its name or as one of its alias domains."""
        if name in self.domains:
            return name
        for domain, (_, _, aliases) in self.domains.items():
            if name in aliases:
                return domain
        return None

    def has_content(self, domain: str) -> bool:
        return any(k.rpartition("@")[2] == domain for k in (*self.accounts, *self.aliases))


class Runner:
    def __init__(self, directory: Directory, rng: random.Random) -> None:
        self.d = directory
        self.rng = rng
        self.state = State()

    async def expect(self, error: type[DirectoryError] | None, call: object) -> object:
        """Await ``call``; it must raise exactly ``error`` (or succeed when None)."""
        if error is not None:
            with pytest.raises(error):
                await call  # type: ignore[misc]
            return None
        return await call  # type: ignore[misc]

    def address(self) -> str:
        return f"{self.rng.choice(LOCALS)}@{self.rng.choice(DOMAIN_NAMES + ALIAS_NAMES[:1])}"

    async def add_domain(self) -> None:
        s, name = self.state, self.rng.choice(DOMAIN_NAMES)
        pool = [n for n in ALIAS_NAMES + DOMAIN_NAMES if n != name]
        aliases = frozenset(self.rng.sample(pool, self.rng.choice([0, 0, 1, 2])))
        taken = s.owner(name) is not None or any(s.owner(a) is not None for a in aliases)
        got = await self.expect(
            AlreadyExists if taken else None,
            self.d.add_domain(Domain(name=name, alias_domains=tuple(aliases))),
        )
        if got is not None:
            s.domains[name] = (1, "", aliases)

    async def update_domain(self) -> None:
        s, name = self.state, self.rng.choice(DOMAIN_NAMES + ALIAS_NAMES[:1])
        if name not in s.domains:
            await self.expect(NotFound, self.d.update_domain(name, DomainChanges(description="n")))
            return
        rev = s.domains[name][0]
        if self.rng.random() < 0.3:  # stale compare-and-swap, nothing else wrong
            await self.expect(
                Conflict,
                self.d.update_domain(name, DomainChanges(description="s"), if_revision=rev + 1),
            )
            return
        new = frozenset(
            self.rng.sample([n for n in ALIAS_NAMES if n != name], self.rng.randint(0, 2))
        )
        taken = any(s.owner(a) not in (None, name) for a in new)
        text = f"r{rev + 1}"
        got = await self.expect(
            AlreadyExists if taken else None,
            self.d.update_domain(
                name, DomainChanges(description=text, alias_domains=tuple(new)), if_revision=rev
            ),
        )
        if got is not None:
            s.domains[name] = (rev + 1, text, new)

    async def delete_domain(self) -> None:
        s, name = self.state, self.rng.choice(DOMAIN_NAMES)
        cascade = self.rng.random() < 0.5
        if name not in s.domains:
            error: type[DirectoryError] | None = NotFound
        elif s.has_content(name) and not cascade:
            error = Conflict
        else:
            error = None
        await self.expect(error, self.d.delete_domain(name, cascade=cascade))
        if error is None:
            del s.domains[name]
            for table in (s.accounts, s.aliases):
                for key in [k for k in table if k.rpartition("@")[2] == name]:
                    del table[key]

    async def add_account(self) -> None:
        s, text = self.state, self.address()
        if text.rpartition("@")[2] not in s.domains:
            error: type[DirectoryError] | None = NotFound
        elif text in s.accounts or text in s.aliases:
            error = AlreadyExists
        else:
            error = None
        await self.expect(error, self.d.add_account(account(text)))
        if error is None:
            s.accounts[text] = (1, 0)

    async def update_account(self) -> None:
        s, text = self.state, self.address()
        quota = self.rng.randint(0, 9)
        if text not in s.accounts:
            await self.expect(
                NotFound, self.d.update_account(Address.parse(text), AccountChanges(quota=quota))
            )
            return
        rev, _ = s.accounts[text]
        stale = self.rng.random() < 0.3
        got = await self.expect(
            Conflict if stale else None,
            self.d.update_account(
                Address.parse(text), AccountChanges(quota=quota), if_revision=rev - stale
            ),
        )
        if got is not None:
            s.accounts[text] = (rev + 1, quota)

    async def delete_account(self) -> None:
        s, text = self.state, self.address()
        error = None if text in s.accounts else NotFound
        await self.expect(error, self.d.delete_account(Address.parse(text)))
        s.accounts.pop(text, None)

    def source(self) -> str:
        if self.rng.random() < 0.25:
            return "@" + self.rng.choice(DOMAIN_NAMES)
        return self.address()

    async def add_alias(self) -> None:
        s, source = self.state, self.source()
        dests = frozenset(
            self.rng.sample(["t1@remote.example", "t2@remote.example", "a@d0.example"], 2)
        )
        if source.rpartition("@")[2] not in s.domains:
            error: type[DirectoryError] | None = NotFound
        elif source in s.accounts or source in s.aliases:
            error = AlreadyExists
        else:
            error = None
        await self.expect(error, self.d.add_alias(alias(source, *sorted(dests))))
        if error is None:
            s.aliases[source] = (1, dests)

    async def update_alias(self) -> None:
        s, source = self.state, self.source()
        dests = frozenset(["n@remote.example"])
        if source not in s.aliases:
            await self.expect(
                NotFound, self.d.update_alias(source, AliasChanges(destinations=tuple(dests)))
            )
            return
        rev, _ = s.aliases[source]
        got = await self.expect(
            None,
            self.d.update_alias(source, AliasChanges(destinations=tuple(dests)), if_revision=rev),
        )
        assert got is not None
        s.aliases[source] = (rev + 1, dests)

    async def delete_alias(self) -> None:
        s, source = self.state, self.source()
        error = None if source in s.aliases else NotFound
        await self.expect(error, self.d.delete_alias(source))
        s.aliases.pop(source, None)

    async def check_lookups(self) -> None:
        s = self.state
        for name in DOMAIN_NAMES + ALIAS_NAMES:
            found = await self.d.find_domain(name)
            owner = s.owner(name)
            assert (found.name if found else None) == owner, name
            if found is not None:
                rev, text, aliases = s.domains[found.name]
                assert (found.revision, found.description, set(found.alias_domains)) == (
                    rev,
                    text,
                    aliases,
                )

    async def check_listings(self) -> None:
        s = self.state
        domains = await self.all(self.d.list_domains)
        assert [d.name for d in domains] == sorted(s.domains)
        accounts = await self.all(self.d.list_accounts)
        assert {str(a.address): (a.revision, a.quota) for a in accounts} == s.accounts
        assert [str(a.address) for a in accounts] == sorted(s.accounts)
        aliases = await self.all(self.d.list_aliases)
        assert {a.source: (a.revision, frozenset(a.destinations)) for a in aliases} == s.aliases
        assert [a.source for a in aliases] == sorted(s.aliases)

    async def all(self, lister: object) -> list[object]:
        items: list[object] = []
        cursor = None
        for _ in range(100):
            page = await lister(cursor=cursor, limit=3)  # type: ignore[operator]
            items.extend(page.items)
            cursor = page.next_cursor
            if cursor is None:
                return items
        raise AssertionError("listing did not end")


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_operations_follow_the_model(directory: Directory, seed: int) -> None:
    runner = Runner(directory, random.Random(seed))
    operations = [
        (runner.add_domain, 3),
        (runner.update_domain, 2),
        (runner.delete_domain, 1),
        (runner.add_account, 4),
        (runner.update_account, 2),
        (runner.delete_account, 1),
        (runner.add_alias, 3),
        (runner.update_alias, 1),
        (runner.delete_alias, 1),
    ]
    functions = [op for op, _ in operations]
    weights = [w for _, w in operations]
    for step in range(150):
        await runner.rng.choices(functions, weights)[0]()
        if step % 10 == 9:
            await runner.check_lookups()
    await runner.check_lookups()
    await runner.check_listings()
