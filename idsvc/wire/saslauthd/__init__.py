"""The Cyrus saslauthd "mux" socket: ``protocol.py`` (pure codec) and ``server.py`` (asyncio).

Postfix (``smtpd_sasl_type = cyrus``), Cyrus IMAP and anything else linked against libsasl2 with
``pwcheck_method: saslauthd`` can check plaintext passwords against idsvc through this socket.
"""
