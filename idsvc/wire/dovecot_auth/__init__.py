"""Dovecot auth-client protocol: pure codec (``protocol``) and asyncio listener (``server``)."""

from __future__ import annotations

from idsvc.wire.dovecot_auth.server import DovecotAuthServer

__all__ = ["DovecotAuthServer"]
