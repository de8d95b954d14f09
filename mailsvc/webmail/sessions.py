"""Webmail sessions, in this process's memory only.

The mail password has to reach the IMAP and SMTP servers on every page (they accept nothing
else: no server we talk to, Dovecot included, knows a session credential), so it is kept here,
in the session object, for the life of the session — never in a cookie, a log or on disk — and
dropped at logout, at the idle or absolute timeout, or when the store evicts the session. The
cookie holds only a random 256-bit id (``__Host-mailsvc``; ``HttpOnly; Secure;
SameSite=Strict``), replaced at login.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Frame:
    """The cleaned HTML body of the message a ``/read`` page just showed, kept for the
    ``/body`` request its frame makes next (once, for ``FRAME_KEPT_FOR`` seconds), so opening a
    message costs one IMAP conversation and one sanitising pass, not two."""

    folder: str
    uid: int
    html: str
    made: float


@dataclass(eq=False)
class WebmailSession:
    id: str
    csrf: str
    created: float
    seen: float
    user: str = ""
    password: str = field(default="", repr=False)
    notices: list[str] = field(default_factory=list)
    frame: Frame | None = field(default=None, repr=False)

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(
            presented.encode("utf-8", "replace"), self.csrf.encode()
        )

    def forget(self) -> None:
        self.password = ""
        self.user = ""
        self.frame = None


class Sessions:
    def __init__(
        self,
        *,
        idle: float,
        absolute: float,
        max_sessions: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._idle, self._absolute, self._max, self._clock = idle, absolute, max_sessions, clock
        self._live: OrderedDict[str, WebmailSession] = OrderedDict()

    def __len__(self) -> int:
        return len(self._live)

    def new(self) -> WebmailSession:
        now = self._clock()
        s = WebmailSession(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now)
        self._live[s.id] = s
        while len(self._live) > self._max:
            _, old = self._live.popitem(last=False)
            old.forget()
        return s

    def get(self, sid: str | None) -> WebmailSession | None:
        if not sid or len(sid) > 128:
            return None
        s = self._live.get(sid)
        if s is None:
            return None
        now = self._clock()
        if now - s.seen > self._idle or now - s.created > self._absolute:
            self.end(s)
            return None
        s.seen = now
        self._live.move_to_end(sid)
        return s

    def end(self, s: WebmailSession) -> None:
        self._live.pop(s.id, None)
        s.forget()
