"""IMAP4rev1 front end (RFC 3501 and the extensions mainstream clients use): :mod:`.protocol`
(pure codec: command parser and response formatting), :mod:`.fetch` (ENVELOPE, BODYSTRUCTURE and
sections from raw bytes), :mod:`.search`, :mod:`.session` (state machine), :mod:`.server`."""
