"""The SMTP front end: MX (inbound) and submission listeners on aiosmtpd.

* :mod:`.resolve` — recipients and senders through the socketmap client;
* :mod:`.handler` — the aiosmtpd handler (MAIL/RCPT/DATA/AUTH decisions, delivery);
* :mod:`.session` — the aiosmtpd ``SMTP`` subclass (connection limits, address parsing);
* :mod:`.outbound` — the smarthost client; :mod:`.headers` — ``Received:``/``Return-Path:``;
* :mod:`.tls` — TLS contexts and the development self-signed certificate.
"""
