"""Who is calling and what it may touch: bearer tokens, scopes, the rank rule, rate limits.

Scopes (``idsvc.state.Scope``):

* ``admin`` — every verb on every object.
* ``domain_admin`` (domains D) — read and write accounts and aliases whose domain is in D, read
  and update (not create, delete, or re-point alias domains of) the domains in D, manage tokens
  whose authority lies inside its own. Objects outside D answer **404** exactly as absent ones do.
* ``read_only`` (every domain, or domains D) — GET only; a write on a visible object is **403**.

**Rank rule.** Every token is a grant of authority; a token may name an ``owner`` mailbox. A
token *covers* another when the other's authority is a subset of its own (``admin`` covers all;
``domain_admin`` D covers ``domain_admin``/``read_only`` tokens naming only domains in D, but not
a global ``read_only`` nor any ``admin``). A mailbox *outranks* a token when one of the mailbox's
active owned tokens is not covered by it. Writes to such a mailbox (password, PATCH, DELETE) and
to tokens the caller does not cover answer **403** — the mailbox is in the caller's domain, so its
existence is no secret, but taking it over would escalate. Reads stay allowed.

Failed token attempts are counted per client address; after ``api.token_failures`` failures
within ``api.token_failure_window`` seconds further *failing* attempts from that address answer
**429** with ``Retry-After`` until the window has passed. A valid token is never throttled: the
token is checked first (one keyed-digest lookup compared with ``hmac.compare_digest``, the same
work for a wrong secret and an unknown id), and only a failure consults and feeds the limiter.
So nobody can lock the admins out by sending bogus tokens from a shared address.

The client address is the TCP peer, unless the peer is in ``api.trusted_proxies``: then
``X-Forwarded-For`` is read from the right and the first hop that is not a trusted proxy is the
client (hops further left are whatever the client claimed). A forged ``X-Forwarded-For`` from an
untrusted peer is ignored.

How it fails: a missing/malformed/unknown/revoked token is a 401 problem with
``WWW-Authenticate: Bearer``; the state store being down is a 503.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from idsvc.api.context import context_of
from idsvc.api.problems import Forbidden, TooManyRequests, Unauthorized
from idsvc.auth.limiter import SlidingLimiter as SlidingLimiter  # its home since the policy service
from idsvc.errors import NotFound
from idsvc.password_policy import Role
from idsvc.state import Scope, TokenInfo

bearer = HTTPBearer(auto_error=False, description="An idsvc API token: idsvc_<id>_<secret>")


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller."""

    token: TokenInfo
    remote: str

    @property
    def actor(self) -> str:
        return self.token.actor

    @property
    def is_admin(self) -> bool:
        return self.token.scope is Scope.ADMIN

    @property
    def all_domains(self) -> bool:
        """Sees every domain (admin, or a read-only token without a domain list)."""
        return self.is_admin or (self.token.scope is Scope.READ_ONLY and not self.token.domains)

    @property
    def domains(self) -> tuple[str, ...]:
        return self.token.domains

    def can_read(self, domain: str) -> bool:
        return self.all_domains or domain in self.token.domains

    def can_write(self, domain: str) -> bool:
        if self.is_admin:
            return True
        return self.token.scope is Scope.DOMAIN_ADMIN and domain in self.token.domains

    def covers(self, other: TokenInfo) -> bool:
        """True when ``other``'s authority is a subset of this token's (see the rank rule)."""
        if self.is_admin:
            return True
        if self.token.scope is not Scope.DOMAIN_ADMIN or other.scope is Scope.ADMIN:
            return False
        if not other.domains:  # a global read-only token sees more than any domain admin
            return False
        return set(other.domains) <= set(self.token.domains)

    # -- checks that raise ----------------------------------------------------------------------

    def readable(self, domain: str, what: str) -> None:
        """404 (same as absent) unless the domain is visible; ``what`` is the absent message."""
        if not self.can_read(domain):
            raise NotFound(what)

    def writable(self, domain: str, what: str) -> None:
        """404 when invisible, 403 when visible but not writable."""
        self.readable(domain, what)
        if not self.can_write(domain):
            raise Forbidden("this token may not change objects in this domain")

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden("only an admin token may do this")

    def require_writer(self) -> None:
        if self.token.scope is Scope.READ_ONLY:
            raise Forbidden("this token is read-only")


MAX_FORWARDED_HOPS = 32  # X-Forwarded-For entries looked at (right to left)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(text: str) -> IpAddress | None:
    try:
        addr = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def parse_networks(texts: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(text, strict=False) for text in texts)


def _trusted(addr: IpAddress, proxies: tuple[Network, ...]) -> bool:
    return any(addr.version == net.version and addr in net for net in proxies)


def client_address(peer: str | None, forwarded: list[str], proxies: tuple[Network, ...]) -> str:
    """The client's address: ``peer``, or — when ``peer`` is a trusted proxy — the right-most
    ``X-Forwarded-For`` hop that is not one (``forwarded``: the header values in order). A
    malformed hop ends the walk at the last trusted address seen."""
    if not peer:
        return "local"
    current = _ip(peer)
    if current is None or not proxies or not _trusted(current, proxies):
        return peer
    hops = [hop for value in forwarded for hop in value.split(",")]
    for hop in reversed(hops[-MAX_FORWARDED_HOPS:]):
        addr = _ip(hop)
        if addr is None:
            break
        current = addr
        if not _trusted(addr, proxies):
            break
    return str(current)


def client_key(request: Request) -> str:
    """The address failures are counted under (see the module docs on trusted proxies)."""
    peer = request.client.host if request.client and request.client.host else None
    proxies = context_of(request).trusted_proxies
    if not proxies:
        return peer or "local"
    return client_address(peer, request.headers.getlist("x-forwarded-for"), proxies)


def import_role(principal: Principal) -> Role:
    """The hash-import role of a caller (``idsvc.password_policy``)."""
    return Role.ADMIN if principal.is_admin else Role.DOMAIN_ADMIN


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """Resolve the bearer token or raise 401/429. Used as a dependency on every private route."""
    ctx = context_of(request)
    key = client_key(request)
    if credentials is None:  # not counted: only presented tokens can be guessed
        raise Unauthorized("a bearer token is required")
    info = await ctx.state.verify_token(credentials.credentials)  # constant-time, cheap
    if info is not None:
        return Principal(info, key)  # a valid token is never throttled
    wait = ctx.token_failures.take(key)
    if wait is not None:
        raise TooManyRequests("too many failed token attempts from this address", retry_after=wait)
    raise Unauthorized("the token is not valid")


async def ensure_not_outranked(request: Request, principal: Principal, address: str) -> None:
    """403 when the mailbox ``address`` owns a token that ``principal`` does not cover."""
    if principal.is_admin:
        return
    for owned in await context_of(request).state.tokens_of_owner(address):
        if not principal.covers(owned):
            raise Forbidden("this account outranks the token (it owns a wider token)")
