"""SASL LOGIN (draft-murchison-sasl-login): the server prompts ``Username:`` then ``Password:``.

Each client message is one field, UTF-8, without NUL. An initial response is the user name, so the
first prompt is skipped (``AUTH LOGIN <b64 user>``). An empty user name or password, invalid UTF-8,
a NUL byte or an over-long field ends the exchange with :class:`~idsvc.sasl.base.Fail`. There is no
authorization identity in LOGIN.
"""

from __future__ import annotations

from typing import ClassVar

from idsvc.model import Secret
from idsvc.sasl.base import (
    MAX_IDENTITY_BYTES,
    MAX_PASSWORD_BYTES,
    Continue,
    Fail,
    FailReason,
    Mechanism,
    Step,
    Verify,
    decode_field,
)

USERNAME_PROMPT = b"Username:"
PASSWORD_PROMPT = b"Password:"


class Login(Mechanism):
    name: ClassVar[str] = "LOGIN"
    plaintext: ClassVar[bool] = True
    max_steps: ClassVar[int] = 2

    def __init__(self) -> None:
        super().__init__()
        self._user: str | None = None

    def _begin(self) -> Step:
        return Continue(USERNAME_PROMPT)

    def _step(self, data: bytes) -> Step:
        if self._user is None:
            if not data:
                return Fail(FailReason.EMPTY_IDENTITY)
            user = decode_field(data, limit=MAX_IDENTITY_BYTES)
            if isinstance(user, FailReason):
                return Fail(user)
            self._user = user
            return Continue(PASSWORD_PROMPT)
        if not data:
            return Fail(FailReason.EMPTY_PASSWORD)
        password = decode_field(data, limit=MAX_PASSWORD_BYTES)
        if isinstance(password, FailReason):
            return Fail(password)
        return Verify(authcid=self._user, password=Secret(password))
