"""The Dovecot dict proxy server (``proxy:<socket>:<name>``) for Dovecot 2.3 ``passdb`` /
``userdb`` ``driver = dict``: ``protocol.py`` (pure codec) and ``server.py`` (asyncio)."""
