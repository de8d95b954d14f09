"""Helpers for the contract suite: building model objects and checking timestamps.

Everything here goes through ``idsvc.model`` (the one canonicalisation) and the ``Directory``
Protocol methods only, so the suite stays backend-neutral.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from idsvc.directory.base import Directory
from idsvc.model import Account, Address, Alias, Domain, utcnow

PASSWORD_HASH = "{SSHA}d14l+Z9NxT7CNv9vgUcYN2BAzoMBAgME"


def account(text: str, **fields: Any) -> Account:
    """An account for ``text`` (canonicalised by ``Address.parse``) with a known hash."""
    fields.setdefault("password_hash", PASSWORD_HASH)
    return Account(address=Address.parse(text), **fields)


def alias(source: str, *destinations: str, **fields: Any) -> Alias:
    return Alias(source=source, destinations=tuple(destinations), **fields)


async def add_domains(directory: Directory, *names: str) -> list[Domain]:
    return [await directory.add_domain(Domain(name=name)) for name in names]


async def add_accounts(directory: Directory, *addresses: str) -> list[Account]:
    return [await directory.add_account(account(text)) for text in addresses]


class Window:
    """The span of wall-clock time around a write, at the store's whole-second precision."""

    def __init__(self) -> None:
        self.start = utcnow()
        self.end: datetime | None = None

    def close(self) -> Window:
        self.end = utcnow() + timedelta(seconds=1)
        return self

    def holds(self, moment: datetime) -> bool:
        end = self.end or utcnow() + timedelta(seconds=1)
        return (
            moment.tzinfo is not None
            and moment.utcoffset() == timedelta(0)
            and moment.microsecond == 0
            and self.start <= moment <= end
        )
