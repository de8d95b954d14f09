"""The smarthost client: remote recipients of authenticated users go to one configured MTA (the
queue), with canonical CRLF and dot-stuffing (stdlib ``smtplib`` on a worker thread).

A refusal or an unreachable smarthost raises :class:`RelayFailed` with the reply the SMTP front
end gives its client: a 5xx from the smarthost stays permanent, anything else is ``451 4.4.1``.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Iterable, Iterator, Sequence

from mailsvc.config import SmarthostSettings
from mailsvc.maildir import Chunk


def dot_stuffed(message: Sequence[Chunk], block: int = 65536) -> Iterator[bytes]:
    """The message as DATA bytes: every line starting with '.' gets another one. The message is
    canonical CRLF (bare CR/LF were refused on the way in), so lines split at LF are whole."""
    out: list[bytes] = []
    pending = 0
    for chunk in message:
        lines: Iterable[bytes]
        if isinstance(chunk, bytes):
            lines = chunk.splitlines(keepends=True)
        else:
            chunk.seek(0)
            lines = chunk
        for line in lines:
            if line.startswith(b"."):
                line = b"." + line
            out.append(line)
            pending += len(line)
            if pending >= block:
                yield b"".join(out)
                out, pending = [], 0
    if out:
        yield b"".join(out)


def _transaction(
    client: smtplib.SMTP, sender: str, recipients: Sequence[str], message: Sequence[Chunk]
) -> dict[str, tuple[int, bytes]]:
    """MAIL, RCPT…, DATA streamed with dot-stuffing; the refused recipients (none on success)."""
    code, text = client.mail(sender)
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, text, sender)
    refused: dict[str, tuple[int, bytes]] = {}
    for rcpt in recipients:
        code, text = client.rcpt(rcpt)
        if code not in (250, 251):
            refused[rcpt] = (code, text)
    if refused:
        client.rset()
        if len(refused) == len(recipients):
            raise smtplib.SMTPRecipientsRefused(refused)
        return refused
    code, text = client.docmd("DATA")
    if code != 354:
        raise smtplib.SMTPDataError(code, text)
    for block in dot_stuffed(message):
        client.send(block)
    client.send(b".\r\n")
    code, text = client.getreply()
    if code != 250:
        raise smtplib.SMTPDataError(code, text)
    return {}


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

    def _send(self, sender: str, recipients: Sequence[str], message: Sequence[Chunk]) -> None:
        try:
            with smtplib.SMTP(
                self.host, self.port, local_hostname=self.hostname, timeout=self.settings.timeout
            ) as client:
                client.ehlo()
                if self.settings.starttls:
                    client.starttls(context=ssl.create_default_context())
                    client.ehlo()
                refused = _transaction(client, sender, recipients, message)
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

    async def send(self, sender: str, recipients: Sequence[str], message: Sequence[Chunk]) -> None:
        await asyncio.to_thread(self._send, sender, recipients, message)
