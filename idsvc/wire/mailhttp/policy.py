"""Dovecot auth-policy server (``auth_policy_server_url``, protocols.md §3.7): Dovecot-native logins
feed and obey idsvc's brute-force penalties.

What it does: Dovecot POSTs a JSON object to ``…?command=allow`` before (and, by default, after)
it checks a password and to ``…?command=report`` with the result. :func:`parse_policy_request`
validates that object into a :class:`PolicyRequest`; :func:`decide` answers from the shared
``PenaltyTracker`` (the one the ``Authenticator`` uses, so failures seen by any idsvc socket and
by Dovecot count together):

* ``allow`` → ``{"status": 0}`` when the client's network and the account have earned no penalty,
  else ``{"status": N}`` (Dovecot tarpits N seconds, N = the penalty rounded up); with
  ``reject_at_max`` a penalty at ``auth.penalty_max`` answers ``-1`` (refused before any password
  check; Dovecot 2.3 sends the after-auth check with the same body, so a saturated network is
  refused even with the right password — that is what "refuse" means; leave it off to tarpit).
* ``report`` with ``success: false`` (and not ``policy_reject``, our own refusal, nor a 2.4
  ``fail_type`` of ``internal`` or ``policy``) records one failure for the network and the
  canonical account; ``success: true`` clears the account's
  count (never the network's), exactly as a login through idsvc does.

What it does not do: look at ``pwhash`` (a truncated hash; idsvc needs no password here), or
sleep (Dovecot tarpits).

How it fails: a body that is not a JSON object, an unknown ``command`` or a field of the wrong
type → HTTP 400, which Dovecot treats as a policy server failure (``auth_policy_reject_on_fail``
decides). An unparsable ``login`` only loses its per-account key; the network still counts.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any

from idsvc.auth.penalty import PenaltyTracker
from idsvc.config import AuthSettings, DovecotPolicySettings
from idsvc.errors import InvalidInput
from idsvc.model import canonical_address
from idsvc.wire.listen import Peer
from idsvc.wire.mailhttp.protocol import HttpRequest
from idsvc.wire.mailhttp.server import HttpResponse, json_response

log = logging.getLogger(__name__)

COMMANDS = ("allow", "report")
NOT_THE_CLIENTS_FAULT = frozenset({"internal", "policy"})  # fail_type values never counted
MAX_TEXT = 1024


class PolicyRequestError(ValueError):
    """The request cannot be understood (message says why; never contains a value)."""


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    command: str
    login: str
    remote: str | None
    success: bool | None  # present on report only
    policy_reject: bool = False
    fail_type: str = ""  # Dovecot 2.4: internal, credentials, account, expired, disabled, policy


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise PolicyRequestError(f"field {key} must be a string of at most {MAX_TEXT} characters")
    return value


def _flag(data: dict[str, Any], key: str) -> bool | None:
    value = data.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise PolicyRequestError(f"field {key} must be a boolean")


def parse_policy_request(command: str | None, body: bytes) -> PolicyRequest:
    if command not in COMMANDS:
        raise PolicyRequestError("command must be allow or report")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise PolicyRequestError("body is not JSON") from None
    if not isinstance(data, dict):
        raise PolicyRequestError("body is not a JSON object")
    return PolicyRequest(
        command=command,
        login=_text(data, "login"),
        remote=_text(data, "remote") or None,
        success=_flag(data, "success"),
        policy_reject=bool(_flag(data, "policy_reject")),
        fail_type=_text(data, "fail_type"),
    )


def accounts_of(login: str, default_domain: str | None) -> tuple[str, ...]:
    """The penalty key of a login: its canonical address, or nothing when it has none."""
    if not login:
        return ()
    try:
        return (canonical_address(login, default_domain=default_domain),)
    except InvalidInput:
        return ()


def decide(
    request: PolicyRequest,
    penalties: PenaltyTracker,
    auth: AuthSettings,
    settings: DovecotPolicySettings,
) -> tuple[int, str]:
    """(status, msg) for Dovecot; records reports in ``penalties``."""
    accounts = accounts_of(request.login, auth.default_domain)
    if request.command == "report":
        if request.success:
            penalties.record_success(accounts)
        elif (
            request.success is False
            and not request.policy_reject
            and request.fail_type not in NOT_THE_CLIENTS_FAULT
        ):
            penalties.record_failure(request.remote, accounts)
        return 0, ""
    delay = penalties.delay(request.remote, accounts)
    if delay <= 0:
        return 0, ""
    at_max = auth.penalty_max > 0 and delay >= auth.penalty_max
    if settings.reject_at_max and at_max:
        return -1, "Too many failed logins, try again later."
    return math.ceil(delay), ""


class DovecotPolicyHandler:
    """``POST /policy?command=allow|report``."""

    def __init__(
        self, settings: DovecotPolicySettings, auth: AuthSettings, penalties: PenaltyTracker
    ) -> None:
        self.settings = settings
        self.auth = auth
        self.penalties = penalties

    async def __call__(self, request: HttpRequest, peer: Peer) -> HttpResponse:
        try:
            policy = parse_policy_request(request.query.get("command"), request.body)
        except PolicyRequestError as exc:
            log.warning("dovecot_policy: bad request from %s: %s", peer, exc)
            body = json.dumps({"status": 0, "msg": str(exc)}).encode()
            return json_response(body, status=400)
        status, msg = decide(policy, self.penalties, self.auth, self.settings)
        return json_response(json.dumps({"status": status, "msg": msg}).encode())
