"""Clients for idsvc's public sockets, shared by every mailsvc front end.

* :mod:`.dovecot_auth` — SASL over the Dovecot auth-client protocol (one multiplexed connection);
* :mod:`.socketmap` — Postfix socketmap lookups (``domain``, ``mailbox``, ``alias`` …) over a
  bounded pool of persistent connections;
* :mod:`.policy` — the Postfix policy delegation protocol (rate limits and other rules);
* :mod:`.netstring`, :mod:`.dovecot_codec`, :mod:`.policy` codecs are pure (no I/O).

Every client raises :class:`Unavailable` (a temporary failure) for anything that is not a
definite answer from the server: connection refused or lost, a timeout, a malformed or ``TEMP``
reply. Callers turn it into a 4xx, never into a "no".
"""

from mailsvc.clients.errors import Unavailable

__all__ = ["Unavailable"]
