"""The endpoint contrib/dovecot/idsvc.lua calls: Dovecot's Lua passdb hands idsvc the password.

What it does: ``POST /passdb`` with a JSON object ``{"user", "password", "service", "remote_ip",
"local_ip", "secured", "mechanism"}`` (:func:`parse_passdb_request`) is decided by the shared
``Authenticator`` (app passwords, penalties, bind-through, cache and audit stay in one place) and
answered ``{"result": R, "user": canonical}`` (:func:`passdb_reply`), where R names the Dovecot
``PASSDB_RESULT_*`` the script returns:

| Outcome | result |
|---|---|
| OK | ``ok`` (with the canonical ``user``, which Dovecot adopts) |
| MISMATCH, REJECTED | ``password_mismatch`` |
| UNKNOWN_USER | ``user_unknown`` |
| DISABLED | ``user_disabled`` (only ever for the right password) |
| EXPIRED | ``pass_expired`` |
| TEMPFAIL | ``internal_failure`` (Dovecot: temporary failure, never "wrong password") |

What it does not do: hand out password hashes (``auth_passdb_lookup`` is not offered; the hash
never leaves idsvc), or sleep on its own (the Authenticator's failure delay and penalties apply
before the answer, so the script's timeout must exceed ``auth.failure_delay + auth.penalty_max``).

``POST /userdb`` with ``{"user"}`` answers ``{"result": "ok", "fields": {user, home, mail, uid,
gid[, quota_rule]}}`` from ``idsvc.lookups.MailLookups.userdb`` (the ``[mail]`` settings decide
home, mail location, uid/gid and the quota rule), ``{"result": "user_unknown"}`` for an address
that is no account, and ``internal_failure`` when the directory fails.

How it fails: a body that is not the JSON object above → HTTP 400 with ``internal_failure``; the
script maps any non-200 answer, a timeout or a refused connection to
``PASSDB_RESULT_INTERNAL_FAILURE`` / ``USERDB_RESULT_INTERNAL_FAILURE``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from idsvc.auth.request import Authenticating, AuthRequest, Outcome
from idsvc.errors import IdsvcError
from idsvc.lookups import MailLookups
from idsvc.model import Secret
from idsvc.wire.listen import Peer
from idsvc.wire.mailhttp.protocol import HttpRequest
from idsvc.wire.mailhttp.server import HttpResponse, json_response

log = logging.getLogger(__name__)

MAX_FIELD = 8192

RESULTS = {
    Outcome.OK: "ok",
    Outcome.MISMATCH: "password_mismatch",
    Outcome.REJECTED: "password_mismatch",
    Outcome.UNKNOWN_USER: "user_unknown",
    Outcome.DISABLED: "user_disabled",
    Outcome.EXPIRED: "pass_expired",
    Outcome.TEMPFAIL: "internal_failure",
}


class LuaRequestError(ValueError):
    """The script's request is malformed (the message names the field, never its value)."""


@dataclass(frozen=True, slots=True)
class PassdbRequest:
    user: str
    password: Secret
    service: str
    remote_ip: str | None
    local_ip: str | None
    secured: bool
    mechanism: str


def _field(data: dict[str, Any], key: str, *, required: bool = False) -> str:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise LuaRequestError(f"missing {key}")
        return ""
    if not isinstance(value, str) or len(value) > MAX_FIELD:
        raise LuaRequestError(f"{key} must be a string of at most {MAX_FIELD} characters")
    return value


def _object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise LuaRequestError("body is not JSON") from None
    if not isinstance(data, dict):
        raise LuaRequestError("body is not a JSON object")
    return data


def parse_userdb_request(body: bytes) -> str:
    """The user a userdb lookup asks about."""
    return _field(_object(body), "user", required=True)


def parse_passdb_request(body: bytes) -> PassdbRequest:
    data = _object(body)
    secured = data.get("secured", False)
    if not isinstance(secured, bool):
        raise LuaRequestError("secured must be a boolean")
    return PassdbRequest(
        user=_field(data, "user", required=True),
        password=Secret(_field(data, "password")),
        service=_field(data, "service", required=True),
        remote_ip=_field(data, "remote_ip") or None,
        local_ip=_field(data, "local_ip") or None,
        secured=secured,
        mechanism=_field(data, "mechanism") or "PLAIN",
    )


def passdb_reply(outcome: Outcome, user: str | None) -> bytes:
    reply: dict[str, str] = {"result": RESULTS[outcome]}
    if outcome is Outcome.OK and user:
        reply["user"] = user
    return json.dumps(reply).encode()


class LuaPassdbHandler:
    """``POST /passdb``: verify a password for Dovecot's Lua passdb."""

    def __init__(self, authenticator: Authenticating) -> None:
        self.authenticator = authenticator

    async def __call__(self, request: HttpRequest, peer: Peer) -> HttpResponse:
        try:
            passdb = parse_passdb_request(request.body)
        except LuaRequestError as exc:
            log.warning("dovecot_lua: bad passdb request from %s: %s", peer, exc)
            return json_response(passdb_reply(Outcome.TEMPFAIL, None), status=400)
        result = await self.authenticator.authenticate(
            AuthRequest(
                login=passdb.user,
                password=passdb.password,
                service=passdb.service,
                remote_ip=passdb.remote_ip,
                local_ip=passdb.local_ip,
                secured=passdb.secured,
                mechanism=passdb.mechanism,
                protocol="dovecot-lua",
            )
        )
        return json_response(passdb_reply(result.outcome, result.user))


def userdb_reply(fields: dict[str, str] | None) -> bytes:
    if fields is None:
        return json.dumps({"result": "user_unknown"}).encode()
    return json.dumps({"result": "ok", "fields": fields}).encode()


TEMPFAIL_REPLY = json.dumps({"result": "internal_failure"}).encode()


class LuaUserdbHandler:
    """``POST /userdb``: home, mail, uid, gid and quota for Dovecot's Lua userdb."""

    def __init__(self, lookups: MailLookups) -> None:
        self.lookups = lookups

    async def __call__(self, request: HttpRequest, peer: Peer) -> HttpResponse:
        try:
            user = parse_userdb_request(request.body)
        except LuaRequestError as exc:
            log.warning("dovecot_lua: bad userdb request from %s: %s", peer, exc)
            return json_response(TEMPFAIL_REPLY, status=400)
        try:
            record = await self.lookups.userdb(user)
        except IdsvcError as exc:  # TemporaryFailure, ExpansionLimit …: never "unknown user"
            log.warning("dovecot_lua: userdb lookup failed: %s", exc)
            return json_response(TEMPFAIL_REPLY)
        return json_response(userdb_reply(None if record is None else record.fields()))
