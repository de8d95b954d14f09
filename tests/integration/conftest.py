"""Which event loop the integration tests run on: asyncio's own, uvloop, or both.

``idsvc serve`` may run on uvloop, whose transports are not ``asyncio.Transport`` subclasses and
whose timing differs, so the listeners are tested on both loops:

* a test module that sets ``EVENT_LOOPS = BOTH_LOOPS`` runs every async test on each loop
  (test ids gain ``[asyncio]`` / ``[uvloop]``);
* ``IDSVC_TEST_LOOP=uvloop`` (or ``both``) runs every async integration test on uvloop (or on
  both); unset or ``asyncio``, the others run on asyncio's default loop as before.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping

import pytest
import uvloop

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

LOOPS: dict[str, LoopFactory] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
BOTH_LOOPS = ("asyncio", "uvloop")


def _chosen(item: pytest.Item) -> tuple[str, ...]:
    module = getattr(item, "module", None)
    wanted: tuple[str, ...] = tuple(getattr(module, "EVENT_LOOPS", ()))
    env = os.environ.get("IDSVC_TEST_LOOP", "asyncio").strip().lower() or "asyncio"
    if env == "both":
        return BOTH_LOOPS
    if env not in LOOPS:
        raise pytest.UsageError(f"IDSVC_TEST_LOOP must be asyncio, uvloop or both, not {env!r}")
    return wanted or (env,)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, LoopFactory]:
    return {name: LOOPS[name] for name in _chosen(item)}
