"""The webmail: an IMAP/SMTP *client* in the browser's place (docs/webmail.md).

It keeps no mail and no user data: every page is an IMAP conversation (aioimaplib) with the
configured server (ours or any other, e.g. Dovecot) and sending is SMTP submission (aiosmtplib).
It imports nothing from idsvc.
"""
