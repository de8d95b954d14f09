"""The smarthost client: remote recipients of authenticated users go to one configured MTA (the
queue), with canonical CRLF and dot-stuffing (stdlib ``smtplib`` on a worker thread).

A refusal or an unreachable smarthost raises :class:`RelayFailed` with the reply the SMTP front
end gives its client: a 5xx from the smarthost stays permanent, anything else is ``451 4.4.1``.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Sequence

from mailsvc.config import SmarthostSettings


class RelayFailed(Exception):
    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class Smarthost:
    def __init__(self, settings: SmarthostSettings, hostname: str) -> None:
        assert settings.address is not None
        host, _, port = settings.address.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self.settings = settings
        self.hostname = hostname

    def _send(self, sender: str, recipients: Sequence[str], message: bytes) -> None:
        try:
            with smtplib.SMTP(
                self.host, self.port, local_hostname=self.hostname, timeout=self.settings.timeout
            ) as client:
                client.ehlo()
                if self.settings.starttls:
                    client.starttls(context=ssl.create_default_context())
                    client.ehlo()
                refused = client.sendmail(sender, list(recipients), message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            permanent = all(500 <= code < 600 for code in codes)
            raise RelayFailed(
                "550 5.1.1 Recipient refused by the smarthost"
                if permanent
                else "451 4.4.1 Smarthost deferred the recipients"
            ) from exc
        except smtplib.SMTPResponseException as exc:
            if 500 <= exc.smtp_code < 600:
                raise RelayFailed("554 5.0.0 Smarthost refused the message") from exc
            raise RelayFailed("451 4.4.1 Smarthost deferred the message") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise RelayFailed("451 4.4.1 Smarthost unavailable") from exc
        if refused:
            raise RelayFailed("451 4.4.1 Smarthost refused some recipients")

    async def send(self, sender: str, recipients: Sequence[str], message: bytes) -> None:
        await asyncio.to_thread(self._send, sender, recipients, message)
