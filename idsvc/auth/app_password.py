"""What an app password is (a value, without its secret) and what the local overlay answers about
a presented password; pure (no I/O), shared by the auth core and ``idsvc.overlay``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from idsvc.model import Service


class AppCheck(Enum):
    """What the overlay says about a presented password for one account."""

    NO_MATCH = "no_match"  # not one of this account's app passwords: try the directory's
    OK = "ok"
    REFUSED = "refused"  # this account's, but revoked, expired, or not for this service/network


@dataclass(frozen=True, slots=True)
class AppPassword:
    """An app password as stored, without its secret."""

    id: str
    subject: str
    owner: str  # the account's canonical address when it was made (display, audit)
    name: str
    services: frozenset[Service]  # empty: every service
    networks: tuple[str, ...]  # CIDR; empty: from anywhere
    created: datetime
    expires: datetime | None = None
    revoked: datetime | None = None
    last_used: datetime | None = None
    last_ip: str | None = None

    def usable(self, service: Service | None, remote_ip: str | None, now: datetime) -> bool:
        """May it log in to ``service`` from ``remote_ip`` at ``now``?"""
        if self.revoked is not None or (self.expires is not None and self.expires <= now):
            return False
        if self.services and (service is None or service not in self.services):
            return False
        if self.networks:
            try:
                ip = ipaddress.ip_address(remote_ip or "")
            except ValueError:
                return False  # an unknown source cannot be inside a network
            return any(ip in ipaddress.ip_network(n) for n in self.networks)
        return True
