"""What the policy service decides for one Postfix ``smtpd_access_policy`` request.

In order, for a request from an authenticated client (``sasl_username`` set):

1. the SASL account must still exist and be enabled, else ``554 5.7.1`` (a session opened
   before the account was disabled or deleted sends nothing more);
2. with ``sender_login_check``, at MAIL and RCPT a non-empty ``sender`` must be owned by the
   SASL login (:meth:`MailLookups.sender_logins`, the ``senderlogin`` map), else ``553 5.7.1``
   — like Postfix's ``reject_sender_login_mismatch`` for authenticated clients;
3. with ``rate_limit``, at RCPT each message (one ``instance``) counts once per SASL login
   against ``rate_limit`` messages per ``rate_window`` (:class:`idsvc.auth.limiter.WindowCounter`,
   the auth core's limiter); over it: ``450 4.7.1`` with the wait.

Then, at RCPT, for every client: a recipient that resolves to a disabled account is
``550 5.2.1``; with ``quota_check``, one whose mailbox is over its quota (usage from Dovecot's
``maildirsize``, plus the announced ``size``) is ``552 5.2.2 Mailbox full``. Everything else is
``DUNNO`` (let the other restrictions decide). Texts carry no recipient address: Postfix puts
``<address>: Recipient address rejected:`` in front of them itself. A request that is not
``smtpd_access_policy`` is ``DEFER_IF_PERMIT``.

How it fails: a directory fault or timeout is ``DEFER_IF_PERMIT Service temporarily
unavailable`` — a temporary refusal that still lets an explicit later reject win, never an
accidental ``DUNNO``. Anything unexpected propagates: the server logs it and closes the
connection without a reply, so Postfix applies ``smtpd_policy_service_default_action``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from pathlib import Path

from idsvc.auth.limiter import WindowCounter
from idsvc.config import PolicySettings
from idsvc.errors import InvalidInput, TemporaryFailure
from idsvc.lookups import MailLookups
from idsvc.model import Account, canonical_address
from idsvc.quota import maildir_usage

log = logging.getLogger(__name__)

DUNNO = "DUNNO"
TEMPORARY = "DEFER_IF_PERMIT Service temporarily unavailable"
UNSUPPORTED = "DEFER_IF_PERMIT Unsupported policy request"
MAX_SIZE_ATTRIBUTE = 10**15  # an absurd "size" is ignored rather than trusted


def _canonical(text: str) -> str | None:
    try:
        return canonical_address(text)
    except InvalidInput:
        return None


class PolicyRules:
    """See the module docstring. One instance per listener (the rate counts live here)."""

    def __init__(self, lookups: MailLookups, settings: PolicySettings) -> None:
        self._lookups = lookups
        self._settings = settings
        self._rates = (
            WindowCounter(
                settings.rate_limit, settings.rate_window, max_keys=settings.rate_max_entries
            )
            if settings.rate_limit
            else None
        )
        # the last message instance counted per login (one message, many RCPTs: counted once)
        self._instances: OrderedDict[str, str] = OrderedDict()

    async def decide(self, attrs: dict[str, str]) -> str:
        if attrs.get("request") != "smtpd_access_policy":
            return UNSUPPORTED
        try:
            return await self._decide(attrs)
        except TemporaryFailure as exc:
            log.warning("policy: lookup failed temporarily: %s", exc)
            return TEMPORARY

    async def _decide(self, attrs: dict[str, str]) -> str:
        state = attrs.get("protocol_state", "").upper()
        login = attrs.get("sasl_username", "")
        if login:
            refusal = await self._sender_checks(state, login, attrs)
            if refusal is not None:
                return refusal
        if state == "RCPT":
            return await self._recipient_checks(attrs)
        return DUNNO

    async def _sender_checks(self, state: str, login: str, attrs: dict[str, str]) -> str | None:
        # the login as the client typed it (cyrus) or canonical (Dovecot SASL): either way the
        # account it resolves to (alias domain, case) is who is sending
        account = await self._lookups.account(login) if _canonical(login) else None
        if account is None or not account.enabled:
            return "554 5.7.1 Authenticated account is not available for sending"
        user = str(account.address)
        sender = attrs.get("sender", "")
        if self._settings.sender_login_check and sender and state in ("MAIL", "RCPT"):
            owners = await self._lookups.sender_logins(sender)
            if user not in owners:
                return f"553 5.7.1 Sender address {sender} is not owned by user {user}"
        if self._rates is not None and state == "RCPT":
            instance = attrs.get("instance", "")
            if not instance or self._instances.get(user) != instance:
                wait = self._rates.take(user)
                if wait is not None:
                    return f"450 4.7.1 Sending rate limit reached for {user}, retry in {wait} s"
                self._remember(user, instance)
        return None

    def _remember(self, user: str, instance: str) -> None:
        if not instance:
            return
        self._instances[user] = instance
        self._instances.move_to_end(user)
        while len(self._instances) > self._settings.rate_max_entries:
            self._instances.popitem(last=False)

    async def _recipient_checks(self, attrs: dict[str, str]) -> str:
        recipient = attrs.get("recipient", "")
        account = await self._lookups.account(recipient) if recipient else None
        if account is None:
            return DUNNO
        if not account.enabled:
            return "550 5.2.1 Recipient mailbox is disabled"
        quota_applies = self._settings.quota_check and account.quota > 0
        if quota_applies and await self._over_quota(account, attrs.get("size", "")):
            return "552 5.2.2 Mailbox full"
        return DUNNO

    async def _over_quota(self, account: Account, size_text: str) -> bool:
        root = self._lookups.settings.vmail_root
        usage = await asyncio.to_thread(maildir_usage, Path(root, account.maildir))
        if usage is None:
            return False
        size = int(size_text) if size_text.isdigit() and len(size_text) < 16 else 0
        return usage + min(size, MAX_SIZE_ATTRIBUTE) > account.quota
