"""Server-side web sessions: a random id in a cookie, everything else in this process's memory.

A session is created for the login form (it carries the CSRF token the form needs) and replaced
by a new one with a new id at login (rotation: a fixed id planted before login is worthless).
It ends after ``web.session_idle`` seconds without a request, ``web.session_absolute`` seconds
after it was created, or at logout; an ended id is forgotten, so a replayed cookie finds nothing.
At most ``web.max_sessions`` live at once; beyond that the least recently used is dropped.

The store is per process and not persisted: a restart logs everybody out, which is the safe
failure. Nothing secret about the user (no password) is ever kept in a session.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

ID_BYTES = 32


@dataclass
class Session:
    """One browser's session. ``kind`` is ``""`` before login, ``admin`` or ``account`` after."""

    id: str
    csrf: str
    created: float
    seen: float
    kind: str = ""
    user: str = ""  # the mailbox (account sessions, or admin sessions of a directory user)
    token_id: str = ""  # admin sessions: the token whose authority the session carries
    pending_totp: str = ""  # a TOTP secret being enrolled (stored only once a code proves it)
    flash: list[str] = field(default_factory=list)  # one-time messages (e.g. a new secret)

    @property
    def authenticated(self) -> bool:
        return bool(self.kind)

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(
            presented.encode("utf-8", "replace"), self.csrf.encode()
        )


class SessionStore:
    """Live sessions by id, bounded, with idle and absolute timeouts."""

    def __init__(
        self,
        *,
        idle: float,
        absolute: float,
        max_sessions: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._idle = idle
        self._absolute = absolute
        self._max = max_sessions
        self._clock = clock
        self._live: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._live)

    def new(self) -> Session:
        now = self._clock()
        session = Session(
            id=secrets.token_urlsafe(ID_BYTES),
            csrf=secrets.token_urlsafe(ID_BYTES),
            created=now,
            seen=now,
        )
        self._live[session.id] = session
        while len(self._live) > self._max:
            self._live.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session for ``session_id`` (its idle clock restarts), or None."""
        if not session_id or len(session_id) > 128:
            return None
        session = self._live.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now - session.seen > self._idle or now - session.created > self._absolute:
            del self._live[session_id]
            return None
        session.seen = now
        self._live.move_to_end(session_id)
        return session

    def rotate(self, old: Session) -> Session:
        """A fresh session (new id, new CSRF token, new absolute clock) replacing ``old``."""
        self.end(old)
        return self.new()

    def end(self, session: Session) -> None:
        self._live.pop(session.id, None)

    def end_where(self, match: Callable[[Session], bool]) -> int:
        """End every session ``match`` selects (e.g. all of a user's after a password change)."""
        doomed = [sid for sid, s in self._live.items() if match(s)]
        for sid in doomed:
            del self._live[sid]
        return len(doomed)
