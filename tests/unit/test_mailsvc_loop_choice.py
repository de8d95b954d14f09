"""``serve.loop``: which event loop ``mailsvc serve`` runs on (:func:`mailsvc.cli.run`)."""

from __future__ import annotations

import asyncio

import pytest

from mailsvc.cli import run


async def _loop_module() -> int:
    return 1 if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else 0


@pytest.mark.parametrize(("choice", "uvloop"), [("auto", 1), ("uvloop", 1), ("asyncio", 0)])
def test_the_chosen_loop_runs_the_coroutine(choice: str, uvloop: int) -> None:
    assert run(_loop_module(), choice) == uvloop
