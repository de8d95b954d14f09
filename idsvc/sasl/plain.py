"""SASL PLAIN (RFC 4616): one message ``[authzid] NUL authcid NUL passwd``.

Refused (as :class:`~idsvc.sasl.base.Fail`, before any directory access): a message that does not
have exactly two NULs, an empty authcid or password, a field that is not UTF-8 (RFC 4616 §2:
UTF8-SAFE) or is longer than the mechanism's bound, and a message longer than the three bounds
together. An empty authzid means "no other identity" and becomes ``None``; a non-empty one is
passed on untouched — the auth core decides whether it is allowed (master users only).

Without an initial response the server sends an empty challenge and expects the message next.
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

MAX_MESSAGE = 2 * MAX_IDENTITY_BYTES + MAX_PASSWORD_BYTES + 2


class Plain(Mechanism):
    name: ClassVar[str] = "PLAIN"
    plaintext: ClassVar[bool] = True
    max_steps: ClassVar[int] = 1

    def _begin(self) -> Step:
        return Continue(b"")

    def _step(self, data: bytes) -> Step:
        return parse_plain(data)


def parse_plain(data: bytes) -> Verify | Fail:
    """Split and validate one PLAIN message (pure function, also used by tests as the oracle's
    counterpart)."""
    if len(data) > MAX_MESSAGE:
        return Fail(FailReason.TOO_LONG)
    parts = data.split(b"\0")
    if len(parts) != 3:
        return Fail(FailReason.MALFORMED)
    raw_authzid, raw_authcid, raw_password = parts
    if not raw_authcid:
        return Fail(FailReason.EMPTY_IDENTITY)
    if not raw_password:
        return Fail(FailReason.EMPTY_PASSWORD)
    authzid = decode_field(raw_authzid, limit=MAX_IDENTITY_BYTES)
    authcid = decode_field(raw_authcid, limit=MAX_IDENTITY_BYTES)
    password = decode_field(raw_password, limit=MAX_PASSWORD_BYTES)
    if isinstance(authzid, FailReason):
        return Fail(authzid)
    if isinstance(authcid, FailReason):
        return Fail(authcid)
    if isinstance(password, FailReason):
        return Fail(password)
    return Verify(authcid=authcid, password=Secret(password), authzid=authzid or None)
