"""What an authentication asks and what it answers: ``AuthRequest`` in, ``AuthResult`` out.

Both are named tuples (immutable, built once per request: a tuple costs a third of a frozen
dataclass, whose ``__init__`` sets each field through ``object.__setattr__``).

Outcomes are an enum, not a bool: a backend outage (``TEMPFAIL``) must never look like a wrong
password, and every protocol adapter keeps one table mapping ``Outcome`` to its own reply.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple, Protocol

from idsvc.model import Secret


class Outcome(Enum):
    OK = "ok"
    MISMATCH = "mismatch"  # wrong password
    UNKNOWN_USER = "unknown_user"
    DISABLED = "disabled"  # account or domain disabled, or not enabled for the service
    EXPIRED = "expired"  # password expired (directory policy)
    REJECTED = "rejected"  # refused before any lookup: empty/NUL/over-long/invalid input, policy
    TEMPFAIL = "tempfail"  # directory or internal failure: try again later

    @property
    def is_failure(self) -> bool:
        """A definite "no" (not OK, not TEMPFAIL). All of these look alike from outside."""
        return self not in (Outcome.OK, Outcome.TEMPFAIL)


class AuthRequest(NamedTuple):
    """One credential check, as a protocol adapter received it (not yet canonicalised).

    ``login`` is what the client typed (authcid); ``realm`` is a saslauthd-style realm joined as
    ``login@realm`` when the login has no ``@``; ``authzid`` is the identity to act as (SASL
    authorization identity), honoured only for configured master users.
    """

    login: str
    password: Secret
    service: str
    remote_ip: str | None = None
    local_ip: str | None = None
    secured: bool = False
    realm: str | None = None
    mechanism: str = "PLAIN"
    authzid: str | None = None
    protocol: str = ""  # the socket it came through, for the audit trail (saslauthd, dovecot …)


class AuthResult(NamedTuple):
    """The decision. ``user`` is the canonical account name on OK (and when known on failure —
    adapters must not reveal it to clients on failure). ``elapsed`` excludes the failure delay."""

    outcome: Outcome
    user: str | None = None
    elapsed: float = 0.0
    cached: bool = False
    detail: str = ""  # for logs and the audit trail only; never sent to a client

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


class Authenticating(Protocol):
    """What a protocol listener needs from ``idsvc.auth.engine.Authenticator``."""

    async def authenticate(self, request: AuthRequest) -> AuthResult: ...
