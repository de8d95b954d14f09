"""The Postfix lookup tables idsvc serves, shared by the socketmap and tcp_table front ends.

==============  ==============================  ===============================================
map             Postfix parameter               found value
==============  ==============================  ===============================================
``domain``      virtual_mailbox_domains         the canonical domain (hosted or alias domain)
``mailbox``     virtual_mailbox_maps            ``<domain>/<local>/Maildir/`` (under vmail_root)
``alias``       virtual_alias_maps              the destinations, comma-separated
``senderlogin`` smtpd_sender_login_maps         the SASL logins owning the address, comma-sep.
``quota``       (anything that wants it)        the account's quota in bytes (0 = unlimited)
==============  ==============================  ===============================================

:func:`lookup` returns the value, or None for "not found" (which includes every key that is not
an acceptable address or domain). It raises ``TemporaryFailure`` (directory trouble) and
``ExpansionLimit`` (configuration); a map name that is not in :data:`MAPS` is the caller's
error to report.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from idsvc.lookups import MailLookups
from idsvc.model import canonical_domain

MAPS = ("domain", "mailbox", "alias", "senderlogin", "quota")


async def _domain(lookups: MailLookups, key: str) -> str | None:
    if not await lookups.is_hosted_domain(key):
        return None
    return canonical_domain(key)  # cannot fail: the domain was just found


async def _mailbox(lookups: MailLookups, key: str) -> str | None:
    return await lookups.mailbox_path(key)


async def _alias(lookups: MailLookups, key: str) -> str | None:
    return ",".join(await lookups.expand_alias(key)) or None


async def _senderlogin(lookups: MailLookups, key: str) -> str | None:
    return ",".join(await lookups.sender_logins(key)) or None


async def _quota(lookups: MailLookups, key: str) -> str | None:
    quota = await lookups.quota(key)
    return None if quota is None else str(quota)


_HANDLERS: dict[str, Callable[[MailLookups, str], Awaitable[str | None]]] = {
    "domain": _domain,
    "mailbox": _mailbox,
    "alias": _alias,
    "senderlogin": _senderlogin,
    "quota": _quota,
}


async def lookup(lookups: MailLookups, table: str, key: str) -> str | None:
    """The value of ``key`` in map ``table`` (one of :data:`MAPS`), or None."""
    return await _HANDLERS[table](lookups, key)
