"""The tiny interface every SASL mechanism implements, and its three possible answers.

A mechanism is a pure, per-exchange state machine: the transport (Dovecot auth-client, SMTP
``AUTH``, IMAP ``AUTHENTICATE`` …) decodes its own framing (usually base64) and hands raw client
bytes to :meth:`Mechanism.start` / :meth:`Mechanism.step`. Each call answers one of:

* :class:`Continue` — send ``challenge`` to the client and wait for its next message;
* :class:`Verify` — the exchange is complete; the caller asks the auth core whether ``authcid``
  with ``password`` (acting as ``authzid``, when given) may log in;
* :class:`Fail` — the client's data is unacceptable; ``reason`` says why (for logs only; a client
  always sees the same generic failure).

What it does not do: touch the directory, verify passwords, base64, or log. Nothing here raises on
client input: malformed data, over-long fields and too many rounds all end in :class:`Fail`, and
after a final answer every further step is a :class:`Fail` as well.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from idsvc.model import Secret

# Upper bounds a mechanism enforces itself; the auth core applies the (smaller) configured ones.
MAX_IDENTITY_BYTES = 1024  # authcid / authzid, UTF-8 octets
MAX_PASSWORD_BYTES = 8192
MAX_STEPS = 8  # client messages per exchange, whatever the mechanism


class FailReason(Enum):
    """Why a mechanism refused the client's data (never shown to the client)."""

    MALFORMED = "malformed message"
    EMPTY_IDENTITY = "empty authentication identity"
    EMPTY_PASSWORD = "empty password"  # noqa: S105 - a reason, not a secret
    TOO_LONG = "field too long"
    INVALID_UTF8 = "not valid UTF-8"
    NUL_IN_FIELD = "NUL byte inside a field"
    TOO_MANY_STEPS = "too many steps"
    FINISHED = "exchange already finished"


@dataclass(frozen=True, slots=True)
class Continue:
    """Send ``challenge`` (raw bytes; the transport encodes it) and wait for the client."""

    challenge: bytes


@dataclass(frozen=True, slots=True)
class Verify:
    """Credentials are complete; ``authzid`` is None when the client asked for no other identity."""

    authcid: str
    password: Secret
    authzid: str | None = None


@dataclass(frozen=True, slots=True)
class Fail:
    reason: FailReason


Step = Continue | Verify | Fail


def decode_field(raw: bytes, *, limit: int) -> str | FailReason:
    """UTF-8 decode one credential field, refusing NUL, over-long and invalid input."""
    if len(raw) > limit:
        return FailReason.TOO_LONG
    if b"\0" in raw:
        return FailReason.NUL_IN_FIELD
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return FailReason.INVALID_UTF8


class Mechanism(ABC):
    """One exchange of one mechanism. Create a fresh instance per authentication attempt.

    ``start(None)`` begins without an initial response; ``start(b"…")`` begins with one (an empty
    initial response is ``b""``, which is not the same as none). Then call ``step`` with each
    client message for as long as the answer is :class:`Continue`.
    """

    name: ClassVar[str]
    plaintext: ClassVar[bool]  # the password crosses the wire in the clear (Dovecot MECH flag)
    max_steps: ClassVar[int] = MAX_STEPS

    def __init__(self) -> None:
        self._steps = 0
        self._started = False
        self._done = False

    def start(self, initial: bytes | None) -> Step:
        if self._started or self._done:
            return self._finish(Fail(FailReason.FINISHED))
        self._started = True
        if initial is None:
            return self._track(self._begin())
        return self.step(initial)

    def step(self, data: bytes) -> Step:
        if self._done:
            return Fail(FailReason.FINISHED)
        self._started = True
        self._steps += 1
        if self._steps > min(self.max_steps, MAX_STEPS):
            return self._finish(Fail(FailReason.TOO_MANY_STEPS))
        return self._track(self._step(data))

    @property
    def finished(self) -> bool:
        return self._done

    def _track(self, answer: Step) -> Step:
        if not isinstance(answer, Continue):
            self._done = True
        return answer

    def _finish(self, answer: Fail) -> Fail:
        self._done = True
        return answer

    @abstractmethod
    def _begin(self) -> Step:
        """The first challenge when the client gave no initial response."""

    @abstractmethod
    def _step(self, data: bytes) -> Step:
        """Handle one client message (the step counter has already been checked)."""
