"""Recipients and senders, resolved through idsvc's socketmap maps (the same ones Postfix uses):

``domain``      domain → found when hosted here (mailbox and alias domains)
``alias``       address → comma-separated destinations (catch-all, alias domains and the recipient
                delimiter are resolved by the server)
``mailbox``     address → maildir path relative to the vmail root
``quota``       address → bytes (``0`` or not found: no limit)
``senderlogin`` address → comma-separated SASL logins allowed to use it as envelope sender

:meth:`Resolver.recipient` follows aliases breadth-first (at most ``depth`` levels and ``fanout``
final destinations, each destination once), so an alias with several destinations gives one copy
each, deduplicated. An alias destination in a domain that is not hosted here is a remote
destination (forwarded through the smarthost). Any lookup without a definite answer raises
:class:`~mailsvc.clients.Unavailable`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from mailsvc.address import BadAddress, Mailbox, parse_envelope
from mailsvc.clients.socketmap import SocketmapClient

log = logging.getLogger("mailsvc.smtp.resolve")


class TooManyDestinations(Exception):
    pass


@dataclass(frozen=True)
class LocalTarget:
    address: str  # the mailbox address (after alias expansion)
    path: str  # maildir, relative to the vmail root
    quota: int  # bytes; 0: no limit


@dataclass(frozen=True)
class Prefetched:
    hosted: bool
    alias: str | None
    path: str | None
    quota: str | None


@dataclass
class Resolution:
    local: list[LocalTarget] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.local and not self.remote


class Resolver:
    def __init__(self, maps: SocketmapClient, *, depth: int = 8, fanout: int = 100) -> None:
        self.maps = maps
        self.depth = depth
        self.fanout = fanout

    async def is_local_domain(self, domain: str) -> bool:
        return await self.maps.lookup("domain", domain) is not None

    async def _mailbox(
        self, address: str, known: tuple[str | None, str | None] | None = None
    ) -> LocalTarget | None:
        # both at once, on two pooled connections: one round trip instead of two
        path, raw_quota = known or await asyncio.gather(
            self.maps.lookup("mailbox", address), self.maps.lookup("quota", address)
        )
        if path is None:
            return None
        try:
            quota = max(int(raw_quota), 0) if raw_quota else 0
        except ValueError:
            log.warning("quota map returned a non-number for %s; treating as no limit", address)
            quota = 0
        return LocalTarget(address, path.strip(), quota)

    async def prefetch(self, mailbox: Mailbox) -> Prefetched:
        """Every first-level answer for ``mailbox`` in one round trip (four lookups at once on
        pooled connections): is the domain hosted, its alias, mailbox and quota entries. Only the
        domain answer decides local vs relay; the others are used only if it is hosted."""
        address = str(mailbox)
        hosted, alias, path, quota = await asyncio.gather(
            self.is_local_domain(mailbox.domain),
            self.maps.lookup("alias", address),
            self.maps.lookup("mailbox", address),
            self.maps.lookup("quota", address),
        )
        return Prefetched(hosted, alias, path, quota)

    async def recipient(
        self, mailbox: Mailbox, first: Prefetched | None = None
    ) -> Resolution | None:
        """Where mail for ``mailbox`` (in a hosted domain) goes; ``None`` when nowhere.
        ``first``: :meth:`prefetch`'s answers for ``mailbox`` itself."""
        result = Resolution()
        seen: set[str] = set()
        level: list[str] = [str(mailbox)]
        local_domains: dict[str, bool] = {mailbox.domain: True}
        for _depth in range(self.depth + 1):
            following: list[str] = []
            for address in level:
                if address in seen:
                    continue
                seen.add(address)
                domain = address.rpartition("@")[2]
                if domain not in local_domains:
                    local_domains[domain] = await self.is_local_domain(domain)
                if not local_domains[domain]:
                    result.remote.append(address)
                    continue
                top = first is not None and address == str(mailbox)
                if top and first is not None:
                    destinations = first.alias
                else:
                    destinations = await self.maps.lookup("alias", address)
                targets = _split(destinations) if destinations else []
                if not targets or address in targets:
                    known = (first.path, first.quota) if top and first is not None else None
                    target = await self._mailbox(address, known)
                    if target is not None:
                        result.local.append(target)
                    elif address != str(mailbox):
                        log.warning("alias destination %s has no mailbox; skipped", address)
                following.extend(t for t in targets if t != address)
                if len(result.local) + len(result.remote) > self.fanout:
                    raise TooManyDestinations(str(mailbox))
            if not following:
                break
            level = following
        else:
            log.warning("alias expansion of %s deeper than %d levels; cut", mailbox, self.depth)
        return None if result.empty else result

    async def sender_logins(self, address: str) -> set[str]:
        found = await self.maps.lookup("senderlogin", address)
        return {x.strip().lower() for x in found.split(",") if x.strip()} if found else set()


def _split(value: str) -> list[str]:
    out: list[str] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            out.append(str(parse_envelope(item)))
        except BadAddress:
            log.warning("map returned an unusable address; skipped")
    return out
