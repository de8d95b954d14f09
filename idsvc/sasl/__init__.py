"""SASL mechanisms as pure state machines (see :mod:`idsvc.sasl.base` for the interface).

``MECHANISMS`` maps the upper-case mechanism name to its class; ``create("plain")`` looks a name
up case-insensitively and returns a fresh exchange, or None for a mechanism we do not have.
"""

from __future__ import annotations

from idsvc.sasl.base import Continue, Fail, FailReason, Mechanism, Step, Verify
from idsvc.sasl.login import Login
from idsvc.sasl.plain import Plain

MECHANISMS: dict[str, type[Mechanism]] = {"PLAIN": Plain, "LOGIN": Login}


def create(name: str) -> Mechanism | None:
    """A new exchange of mechanism ``name`` (any case), or None when it is unknown."""
    cls = MECHANISMS.get(name.upper())
    return cls() if cls is not None else None


__all__ = [
    "MECHANISMS",
    "Continue",
    "Fail",
    "FailReason",
    "Login",
    "Mechanism",
    "Plain",
    "Step",
    "Verify",
    "create",
]
