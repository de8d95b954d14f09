"""POP3 front end (RFC 1939, CAPA RFC 2449, STLS RFC 2595, AUTH RFC 5034): :mod:`.protocol`
(pure codec), :mod:`.session` (state machine), :mod:`.server` (asyncio listener)."""
