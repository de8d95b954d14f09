"""The Postfix socketmap table server: ``protocol.py`` (pure codec) and ``server.py`` (asyncio).

Postfix ``socketmap:unix:/run/idsvc/socketmap:<map>`` (or ``socketmap:inet:127.0.0.1:PORT:<map>``)
looks up the maps of :mod:`idsvc.wire.tables` through it.
"""
