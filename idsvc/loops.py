"""The event loop ``idsvc serve`` runs on: uvloop when it is installed, else the stdlib loop.

What it does: :func:`loop_factory` turns the ``serve.loop`` setting (``auto``, ``uvloop``,
``asyncio``; also ``IDSVC_SERVE__LOOP`` or ``idsvc serve --loop``) into a loop factory for
``asyncio.Runner``, and :func:`run` runs a coroutine on it. ``auto`` picks uvloop when it imports
(it is a dependency: measured +11 to 14 % auth throughput on the Dovecot socket) and falls back to
the stdlib loop otherwise; ``asyncio`` forces the stdlib loop (a fault in uvloop is then one
setting away).

How it fails: ``uvloop`` asked for explicitly but not importable raises ``ConfigError``; ``auto``
never fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from idsvc.errors import ConfigError

T = TypeVar("T")
LoopChoice = Literal["auto", "uvloop", "asyncio"]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def uvloop_factory() -> LoopFactory | None:
    """``uvloop.new_event_loop`` when uvloop imports, else None."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def loop_factory(choice: LoopChoice) -> tuple[str, LoopFactory | None]:
    """``(name, factory)`` for ``choice``; a None factory is the stdlib default loop."""
    if choice == "asyncio":
        return "asyncio", None
    factory = uvloop_factory()
    if factory is not None:
        return "uvloop", factory
    if choice == "uvloop":
        raise ConfigError("serve.loop = uvloop, but uvloop is not installed")
    return "asyncio", None


def run(main: Callable[[], Coroutine[Any, Any, T]], choice: LoopChoice) -> T:
    """Run ``main()`` to completion on the chosen loop (like ``asyncio.run``); the coroutine is
    only created once the loop is chosen, so a ConfigError leaves none un-awaited."""
    _name, factory = loop_factory(choice)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())
