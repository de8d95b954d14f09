"""How a proxy-mode POP3 or IMAP listener logs users in: :class:`ProxyAccess` (idsvc only: a
proxied user has no local mailbox, so neither socketmap nor the Maildir store is asked). The
listeners themselves are the ordinary ones (``pop3_listener`` / ``imap_listener``) running a
:class:`~mailsvc.proxy.pop3.ProxyPop3Session` / :class:`~mailsvc.proxy.imap.ProxyImapSession`
per connection."""

from __future__ import annotations

from mailsvc.access import LoginResult, MailAccess, Result


class ProxyAccess(MailAccess):
    """Authentication through idsvc without opening a local account: ``ok`` carries the user
    idsvc authenticated (its canonical name) and no account."""

    async def open(self, user: str) -> LoginResult:
        return LoginResult(Result.OK, user)
