"""The policy listener: Postfix ``check_policy_service unix:…`` / ``inet:127.0.0.1:PORT``.

Each request (see ``protocol.py``) is decided by :class:`rules.PolicyRules` and answered with one
``action=`` reply, in order, on a persistent connection. A framing error (a line without ``=``,
over-long lines, more than ``max_attributes`` attributes) or an unexpected error closes the
connection without a reply, as Postfix documents for a policy server in trouble; Postfix then
applies ``smtpd_policy_service_default_action`` (451 4.3.5). A request that never gets its
empty line is closed after ``request_timeout``. Transport and limits: :mod:`idsvc.wire.serving`.
"""

from __future__ import annotations

import functools
import logging

from idsvc.auth.inputs import sanitize
from idsvc.config import PolicySettings
from idsvc.lookups import MailLookups
from idsvc.wire.policy import protocol as proto
from idsvc.wire.policy.rules import PolicyRules
from idsvc.wire.serving import LookupServer, Reply

log = logging.getLogger(__name__)


class PolicySession:
    def __init__(self, rules: PolicyRules) -> None:
        self._rules = rules

    async def handle(self, attrs: proto.Attributes, reply: Reply) -> bool:
        action = await self._rules.decide(attrs)
        if action != "DUNNO":
            log.info(
                "policy: %s sasl_username=%s sender=%s recipient=%s: %s",
                sanitize(attrs.get("protocol_state", "?"), 16),
                sanitize(attrs.get("sasl_username", "")),
                sanitize(attrs.get("sender", "")),
                sanitize(attrs.get("recipient", "")),
                action,
            )
        reply.write(proto.reply(action))
        return True


class PolicyServer(LookupServer[proto.Attributes]):
    def __init__(self, settings: PolicySettings, lookups: MailLookups) -> None:
        rules = PolicyRules(lookups, settings)
        super().__init__(
            "policy",
            settings,
            socket=settings.socket,
            decoder_factory=functools.partial(proto.PolicyDecoder, settings.max_attributes),
            session_factory=lambda: PolicySession(rules),
        )
